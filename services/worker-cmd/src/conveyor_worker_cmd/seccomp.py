"""A small seccomp deny-list for commands, as a classic BPF program built in the worker and
installed by the child between fork and exec.

Landlock confines files, TCP and signals; this closes what it does not cover: other
processes' memory, kernel surfaces an unprivileged process rarely needs, new namespaces,
and sockets of any kind. Everything else is allowed, so ordinary programs run unchanged.
"""

from __future__ import annotations

import ctypes
import errno
import platform
import struct

PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2

_RET_KILL_PROCESS = 0x80000000
_RET_ERRNO = 0x00050000
_RET_ALLOW = 0x7FFF0000

_LD_W_ABS = 0x20
_JEQ_K = 0x15
_JGE_K = 0x35
_JSET_K = 0x45
_RET_K = 0x06

_OFFSET_NR = 0
_OFFSET_ARCH = 4
_OFFSET_ARG0_LOW = 16  # args[0] of struct seccomp_data, low 32 bits (little-endian)

_X32_SYSCALL_BIT = 0x40000000

# Namespace flags of clone(2); creating namespaces is refused (clone3 is refused outright:
# its flags sit in memory a filter cannot read, and libc falls back to clone on ENOSYS).
_CLONE_NEWNS, _CLONE_NEWTIME, _CLONE_NEWCGROUP = 0x00020000, 0x00000080, 0x02000000
_CLONE_NEWUTS, _CLONE_NEWIPC, _CLONE_NEWUSER = 0x04000000, 0x08000000, 0x10000000
_CLONE_NEWPID, _CLONE_NEWNET = 0x20000000, 0x40000000
_CLONE_NEW_ANY = (
    _CLONE_NEWNS | _CLONE_NEWTIME | _CLONE_NEWCGROUP | _CLONE_NEWUTS
    | _CLONE_NEWIPC | _CLONE_NEWUSER | _CLONE_NEWPID | _CLONE_NEWNET
)  # fmt: skip

# Refused with EPERM and why:
_DENIED = (
    "ptrace",  # read or steer another process
    "process_vm_readv",
    "process_vm_writev",
    "mount",  # filesystem topology
    "umount2",
    "pivot_root",
    "chroot",
    "open_tree",
    "move_mount",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "mount_setattr",
    "unshare",  # new namespaces, and joining others
    "setns",
    "keyctl",  # the kernel keyring, shared by the uid
    "add_key",
    "request_key",
    "bpf",  # large kernel attack surfaces
    "perf_event_open",
    "userfaultfd",
    "io_uring_setup",  # its operations bypass this filter
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "truncate",  # by path: Landlock handles it only from ABI 3 (ftruncate needs a writable fd)
)

# Syscall numbers: (x86_64, aarch64), from each architecture's unistd table.
_NUMBERS: dict[str, tuple[int, int]] = {
    "ptrace": (101, 117),
    "process_vm_readv": (310, 270),
    "process_vm_writev": (311, 271),
    "mount": (165, 40),
    "umount2": (166, 39),
    "pivot_root": (155, 41),
    "chroot": (161, 51),
    "open_tree": (428, 428),
    "move_mount": (429, 429),
    "fsopen": (430, 430),
    "fsconfig": (431, 431),
    "fsmount": (432, 432),
    "fspick": (433, 433),
    "mount_setattr": (442, 442),
    "unshare": (272, 97),
    "setns": (308, 268),
    "keyctl": (250, 219),
    "add_key": (248, 217),
    "request_key": (249, 218),
    "bpf": (321, 280),
    "perf_event_open": (298, 241),
    "userfaultfd": (323, 282),
    "io_uring_setup": (425, 425),
    "kexec_load": (246, 104),
    "kexec_file_load": (320, 294),
    "init_module": (175, 105),
    "finit_module": (313, 273),
    "delete_module": (176, 106),
    "truncate": (76, 45),
    "socket": (41, 198),
    "clone": (56, 220),
    "clone3": (435, 435),
}
_AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
_ARCH_INDEX = {"x86_64": 0, "aarch64": 1}


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


class Filter:
    """A BPF program kept alive in the worker; `install` is safe in a forked child."""

    def __init__(self, program: bytes) -> None:
        self._buffer = ctypes.create_string_buffer(program, len(program))
        self._fprog = _SockFprog(len(program) // 8, ctypes.addressof(self._buffer))
        self._prctl = ctypes.CDLL(None, use_errno=True).prctl

    def install(self) -> None:
        """Filter the calling thread and its children for good (needs no_new_privs)."""
        if self._prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(self._fprog), 0, 0):
            code = ctypes.get_errno()
            raise OSError(code, f"seccomp: {errno.errorcode.get(code, code)}")


def command_filter(machine: str | None = None) -> Filter | None:
    """The filter for this machine's architecture; None where no syscall table is known."""
    arch = machine or platform.machine()
    if arch not in _AUDIT_ARCH:
        return None
    numbers = {name: pair[_ARCH_INDEX[arch]] for name, pair in _NUMBERS.items()}
    return Filter(_program(_AUDIT_ARCH[arch], numbers))


def _program(audit_arch: int, numbers: dict[str, int]) -> bytes:
    deny = _ret(_RET_ERRNO | errno.EPERM)
    body = [
        _ld(_OFFSET_NR),
        _jump_if(_JGE_K, _X32_SYSCALL_BIT, "deny"),  # x32 numbers alias x86_64 ones
        *(_jump_if(_JEQ_K, numbers[name], "deny") for name in _DENIED),
        _jump_if(_JEQ_K, numbers["socket"], "no_socket"),
        _jump_if(_JEQ_K, numbers["clone3"], "no_clone3"),
        _jump_if(_JEQ_K, numbers["clone"], "clone"),
        _ret(_RET_ALLOW),
    ]
    tails = {  # BPF jumps only forward: "clone" jumps on to "deny"
        "clone": [
            _ld(_OFFSET_ARG0_LOW),
            _jump_if(_JSET_K, _CLONE_NEW_ANY, "deny"),
            _ret(_RET_ALLOW),
        ],
        "deny": [deny],
        "no_socket": [_ret(_RET_ERRNO | errno.EACCES)],
        "no_clone3": [_ret(_RET_ERRNO | errno.ENOSYS)],
    }
    head = [
        _ld(_OFFSET_ARCH),
        (_JEQ_K, 1, 0, audit_arch),  # the wrong ABI: numbers would mean other syscalls
        _ret(_RET_KILL_PROCESS),
    ]
    return _link(head + body, tails)


_Insn = tuple[int, int | str, int, int]


def _ld(offset: int) -> _Insn:
    return (_LD_W_ABS, 0, 0, offset)


def _ret(value: int) -> _Insn:
    return (_RET_K, 0, 0, value)


def _jump_if(op: int, value: int, label: str) -> _Insn:
    return (op, label, 0, value)  # true: to the label; false: next instruction


def _link(main: list[_Insn], tails: dict[str, list[_Insn]]) -> bytes:
    """Lay out `main` then each tail, turning label jumps into relative offsets."""
    starts: dict[str, int] = {}
    position = len(main)
    for label, insns in tails.items():
        starts[label] = position
        position += len(insns)
    program = b""
    for index, (code, jt, jf, k) in enumerate(main + [i for t in tails.values() for i in t]):
        if isinstance(jt, str):
            jt = starts[jt] - index - 1
            assert 0 <= jt <= 255, "BPF jumps are forward and short"
        program += struct.pack("=HBBI", code, jt, jf, k)
    return program
