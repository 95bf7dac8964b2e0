"""Landlock through its three syscalls: the kernel's unprivileged filesystem, network and
scope sandbox (Linux >= 5.13). A ruleset is built in the worker; the command's child only
calls `restrict_self` on it between fork and exec.

No Python binding on PyPI covers network rules and scopes (ABI >= 4, >= 6) and is out of
alpha, so this is the few structs and numbers of <linux/landlock.h> it needs.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
from collections.abc import Iterable

# The same numbers on every architecture (added after the syscall tables were unified).
SYS_LANDLOCK_CREATE_RULESET = 444
SYS_LANDLOCK_ADD_RULE = 445
SYS_LANDLOCK_RESTRICT_SELF = 446

CREATE_RULESET_VERSION = 1 << 0
RULE_PATH_BENEATH = 1

# Filesystem rights, by the ABI version that introduced them.
FS_EXECUTE = 1 << 0
FS_WRITE_FILE = 1 << 1
FS_READ_FILE = 1 << 2
FS_READ_DIR = 1 << 3
_FS_RIGHTS_BY_ABI = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 5: (1 << 16) - 1}
NET_BIND_TCP = 1 << 0  # ABI 4
NET_CONNECT_TCP = 1 << 1
SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0  # ABI 6
SCOPE_SIGNAL = 1 << 1

READ_ONLY = FS_EXECUTE | FS_READ_FILE | FS_READ_DIR
# A rule on a file (not a directory) may only hold rights that apply to files.
_FILE_RIGHTS = FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE | (1 << 14) | (1 << 15)

_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long


class _RulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1  # packed in the kernel's header
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


class LandlockError(OSError):
    pass


def abi_version() -> int:
    """The Landlock ABI the kernel offers; 0 when Landlock is absent or disabled."""
    version = int(_syscall(SYS_LANDLOCK_CREATE_RULESET, None, 0, CREATE_RULESET_VERSION))
    return max(version, 0)


def fs_rights(abi: int) -> int:
    """Every filesystem right `abi` knows: all of them are handled, hence denied by default."""
    return max((rights for since, rights in _FS_RIGHTS_BY_ABI.items() if abi >= since), default=0)


def create_ruleset(
    abi: int, read_only: Iterable[str], read_write: Iterable[str], device_rw: Iterable[str]
) -> int:
    """A ruleset fd (close-on-exec) that denies all filesystem access but the paths given,
    every TCP bind and connect (ABI >= 4), and signals and abstract unix sockets to
    processes outside the sandbox (ABI >= 6). Paths that do not exist are skipped."""
    handled = fs_rights(abi)
    attr = _RulesetAttr(
        handled_access_fs=handled,
        handled_access_net=(NET_BIND_TCP | NET_CONNECT_TCP) if abi >= 4 else 0,
        scoped=(SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL) if abi >= 6 else 0,
    )
    ruleset = _checked(
        _syscall(SYS_LANDLOCK_CREATE_RULESET, ctypes.byref(attr), ctypes.sizeof(attr), 0)
    )
    try:
        for path in read_only:
            _allow(ruleset, path, READ_ONLY)
        for path in device_rw:
            _allow(ruleset, path, FS_READ_FILE | FS_WRITE_FILE)
        for path in read_write:
            _allow(ruleset, path, handled)
    except BaseException:
        os.close(ruleset)
        raise
    return ruleset


def restrict_self(ruleset: int) -> None:
    """Confine the calling thread and its future children for good (needs no_new_privs)."""
    _checked(_syscall(SYS_LANDLOCK_RESTRICT_SELF, ruleset, 0))


def _allow(ruleset: int, path: str, rights: int) -> None:
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(os.close, fd)
        if not os.path.isdir(path):
            rights &= _FILE_RIGHTS
        rule = _PathBeneathAttr(allowed_access=rights, parent_fd=fd)
        _checked(_syscall(SYS_LANDLOCK_ADD_RULE, ruleset, RULE_PATH_BENEATH, ctypes.byref(rule), 0))


def _checked(result: int) -> int:
    if result < 0:
        errno = ctypes.get_errno()
        raise LandlockError(errno, os.strerror(errno))
    return result
