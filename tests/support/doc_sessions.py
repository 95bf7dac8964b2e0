"""The shell sessions a document shows: parsed, run in one shell, compared with what they print.

Which blocks run: every ```console block. In it, a line starting with `$ ` is a command; the
command goes on over the next lines while it ends with `\\` or leaves a quote or `$(` open
(while bash would prompt for more). The lines after it, up to the next command or the end
of the block, are its documented output: stdout and stderr together, as a terminal shows
them. Trailing blank lines do not count. ```sh blocks are not run.

How a documented output compares with the live one, line by line, after normalising both:

- a line that is only `...` stands for any lines, none included; `...` inside a line for any
  text (how a document shortens a long answer: `{"state":"succeeded",...}`);
- a UUID stands for the UUID at the same place in the live output; one documented id is
  always the same live id, and two documented ids are two live ids. A later command that
  names a documented id runs with the live one (write whole UUIDs, not `5e80ffb1-...`);
- timestamps (`2026-11-27T09:47:07.271446Z`, `2026-11-27 13:32:58`), elapsed times
  (`0:00:10`), durations (`6.8s`, `"duration_s": 0.038`), byte counts (`23795 bytes`),
  ports (`127.0.0.1:50479`), spinner frames and how far a progress bar is drawn become
  placeholders, and `1.0` is `1` (jq 1.6 prints it so, jq 1.7 does not);
- runs of spaces count as one space, and leading and trailing spaces none (table columns
  widen with their content).

Everything else, states, results, error messages and status codes included, must be equal.
"""

from __future__ import annotations

import contextlib
import os
import re
import selectors
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
ANY_LINES = "..."
DOCUMENTED_PORT = re.compile(r"\b(localhost|127\.0\.0\.1):8000\b")
PLACEHOLDERS = [
    (re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:?\d\d)?"), "<time>"),
    (re.compile(r"\b\d+:\d\d:\d\d\b"), "<elapsed>"),
    (re.compile(r'("duration_s": ?)[0-9.e-]+'), r"\1<seconds>"),
    (re.compile(r"\b\d+\.\d[sm]\b"), "<duration>"),
    (re.compile(r"\b\d+ bytes\b"), "<n> bytes"),
    (re.compile(r"(?<![\d.])(\d+)\.0(?![\d.])"), r"\1"),  # jq 1.6 prints 1.0 as 1, jq 1.7 as 1.0
    (re.compile(r"\b(localhost|127\.0\.0\.1):\d+"), r"\1:<port>"),
    (re.compile(r"[\u2800-\u28ff]"), " "),  # a spinner's braille frames
    (re.compile(r"[━╺╸]+"), "━"),  # a progress bar, however far it is drawn
    (re.compile(r"\x1b\[[0-9;?]*[A-Za-z]"), ""),  # terminal control sequences, if any
]

IdMap = dict[str, str]


@dataclass
class Command:
    """One `$ ` command of a document and the output the document shows for it."""

    source: str  # "README.md:84"
    text: str
    expected: list[str] = field(default_factory=list)


def _incomplete(text: str) -> bool:
    """Would bash prompt for more (an open quote, `$(`, or a trailing backslash)?"""
    if text.endswith("\\"):
        return True
    check = subprocess.run(["bash", "-n"], input=text, capture_output=True, text=True)
    return "unexpected EOF" in check.stderr or "unexpected end of file" in check.stderr


def parse_sessions(path: Path, root: Path) -> list[Command]:
    """Every command of every ```console block of `path`, in order, with its output."""
    lines = path.read_text().splitlines()
    name = path.relative_to(root).as_posix()
    commands: list[Command] = []
    current: Command | None = None
    in_block = False
    index = 0
    while index < len(lines):
        line = lines[index]
        if not in_block:
            in_block = line.strip() == "```console"
        elif line.startswith("```"):
            in_block, current = False, None
        elif line.startswith("$ "):
            start, text = index, line[2:]
            while _incomplete(text) and index + 1 < len(lines):
                index += 1
                text += "\n" + lines[index]
            current = Command(f"{name}:{start + 1}", text)
            commands.append(current)
        else:
            assert current is not None, f"{name}:{index + 1}: output before any `$ ` command"
            current.expected.append(line)
        index += 1
    for command in commands:
        while command.expected and not command.expected[-1].strip():
            command.expected.pop()
    return commands


def normalise(line: str) -> str:
    for pattern, placeholder in PLACEHOLDERS:
        line = pattern.sub(placeholder, line)
    return " ".join(line.split())


def _match_line(expected: str, actual: str, ids: IdMap) -> IdMap | None:
    """The id map extended by this line's new ids, or None when the line differs."""
    parts = re.split(f"({UUID.pattern}|\\.\\.\\.)", normalise(expected))
    pattern, new_ids = "", []
    for position, part in enumerate(parts):
        if position % 2 == 0:
            pattern += re.escape(part)
        elif part == ANY_LINES:
            pattern += ".*?"
        elif part in ids:
            pattern += re.escape(ids[part])
        elif part in new_ids:
            pattern += f"(?P=id{new_ids.index(part)})"
        else:
            pattern += f"(?P<id{len(new_ids)}>{UUID.pattern})"
            new_ids.append(part)
    found = re.fullmatch(pattern, normalise(actual))
    if found is None:
        return None
    extended = dict(ids)
    for number, documented in enumerate(new_ids):
        live = found[f"id{number}"]
        if live in extended.values():
            return None  # two documented ids for one live job
        extended[documented] = live
    return extended


def match_output(expected: list[str], actual: list[str], ids: IdMap) -> IdMap | None:
    """The id map extended by the output's new ids, or None when the outputs differ."""
    if not expected:
        return ids if not actual else None
    head, rest = expected[0], expected[1:]
    if head.strip() == ANY_LINES:
        for skipped in range(len(actual) + 1):
            found = match_output(rest, actual[skipped:], ids)
            if found is not None:
                return found
        return None
    if not actual:
        return None
    extended = _match_line(head, actual[0], ids)
    return None if extended is None else match_output(rest, actual[1:], extended)


def live_command(text: str, ids: IdMap, port: int) -> str:
    """The documented command with the live ids and the test gateway's port."""
    text = UUID.sub(lambda found: ids.get(found[0], found[0]), text)
    return DOCUMENTED_PORT.sub(lambda found: f"{found[1]}:{port}", text)


def live_lines(output: str) -> list[str]:
    lines = output.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


class Shell:
    """One bash for a whole document, so variables (`ID=...`) and files carry over."""

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.workdir = workdir
        self.scripts = workdir.parent / f"{workdir.name}-commands"
        self.scripts.mkdir(parents=True, exist_ok=True)
        self.count = 0
        self.process = subprocess.Popen(
            ["bash", "--noprofile", "--norc"],
            cwd=workdir,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def run(self, command: str, timeout: float) -> str:
        """What the command printed (stdout and stderr, in order); fails after `timeout`."""
        assert self.process.stdin is not None and self.process.stdout is not None
        self.count += 1
        script = self.scripts / f"{self.count}.sh"
        script.write_text(command + "\n")
        marker = f"--- end of command {self.count} {uuid.uuid4().hex} ---"
        # stdin from /dev/null: a command must not read the rest of the session.
        self.process.stdin.write(
            f"source {script} </dev/null; printf '\\n%s\\n' '{marker}'\n".encode()
        )
        self.process.stdin.flush()
        out = self.process.stdout.fileno()
        received = b""
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as selector:
            selector.register(out, selectors.EVENT_READ)
            while marker.encode() not in received:
                left = deadline - time.monotonic()
                if left <= 0:
                    self.close()
                    raise TimeoutError(
                        f"still running after {timeout:g}s; printed so far:\n"
                        + received.decode(errors="replace")
                    )
                if selector.select(left):
                    chunk = os.read(out, 65536)
                    if not chunk:
                        raise RuntimeError(
                            f"the shell exited:\n{received.decode(errors='replace')}"
                        )
                    received += chunk
        return received.decode(errors="replace").split(marker)[0]

    def close(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()

    def __enter__(self) -> Shell:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
