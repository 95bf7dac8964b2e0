"""Feed a child's stdin and drain its stdout and stderr at once, keeping bounded output."""

from __future__ import annotations

import contextlib
import os
import selectors
import time
from collections.abc import Callable
from typing import IO

from conveyor_core.event_contract import MAX_OUTPUT_LINE_BYTES, OutputStream

_READ_CHUNK = 64 * 1024
_WRITE_CHUNK = 64 * 1024

# Called with each complete line (without its line break) as soon as it is read; answers
# False once it wants no more lines (the job's output-event cap is reached).
LineHandler = Callable[[OutputStream, str], bool]


class LineSplitter:
    """Cuts a byte stream into lines as it arrives; a line longer than `max_line_bytes` is
    passed on in pieces, so a child that never prints a newline cannot grow the buffer.
    Once `on_line` declines a line, the rest of the stream is not even split."""

    def __init__(self, on_line: Callable[[str], bool], max_line_bytes: int) -> None:
        self.on_line = on_line
        self.max_line_bytes = max_line_bytes
        self._partial = bytearray()
        self._declined = False

    def feed(self, chunk: bytes) -> None:
        if self._declined:
            return
        *complete, self._partial = (self._partial + chunk).split(b"\n")
        for line in complete:
            self._emit(line)
        while len(self._partial) > self.max_line_bytes and not self._declined:
            self._emit(self._partial[: self.max_line_bytes])
            del self._partial[: self.max_line_bytes]

    def close(self) -> None:
        """The stream ended: pass on a last line that had no line break."""
        if self._partial:
            self._emit(self._partial)
            self._partial = bytearray()

    def _emit(self, raw: bytes | bytearray) -> None:
        for start in range(0, max(len(raw), 1), self.max_line_bytes):
            if self._declined:
                return
            piece = bytes(raw[start : start + self.max_line_bytes]).removesuffix(b"\r")
            if not self.on_line(piece.decode("utf-8", errors="replace")):
                self._declined = True
                self._partial = bytearray()


class Capture:
    """The first `limit` bytes of a stream; the rest is read and dropped, so the child never
    blocks on a full pipe and the worker never holds more than `limit`. With `lines`, every
    line is also passed on as it is read, for the job's live event stream."""

    def __init__(self, limit: int, lines: LineSplitter | None = None) -> None:
        self.limit = limit
        self.data = bytearray()
        self.truncated = False
        self.lines = lines

    def feed(self, chunk: bytes) -> None:
        room = self.limit - len(self.data)
        if len(chunk) > room:
            self.truncated = True
        if room > 0:
            self.data += chunk[:room]
        if self.lines is not None:
            self.lines.feed(chunk)

    def end(self) -> None:
        if self.lines is not None:
            self.lines.close()


class StreamPump:
    """Moves bytes between the worker and one child's pipes without ever blocking on them."""

    def __init__(
        self,
        stdin: IO[bytes] | None,
        stdout: IO[bytes],
        stderr: IO[bytes],
        stdin_data: bytes,
        limit: int,
        on_line: LineHandler | None = None,
    ) -> None:
        self.stdout = Capture(limit, _splitter(on_line, "stdout"))
        self.stderr = Capture(limit, _splitter(on_line, "stderr"))
        self._selector = selectors.DefaultSelector()
        self._files: list[IO[bytes]] = [stdout, stderr]
        self._selector.register(stdout, selectors.EVENT_READ, self.stdout)
        self._selector.register(stderr, selectors.EVENT_READ, self.stderr)
        self._pending = memoryview(stdin_data)
        if stdin is not None:
            self._files.append(stdin)
            self._start_feeding(stdin)

    @property
    def open(self) -> bool:
        """True while a pipe is still registered (not yet at EOF or closed)."""
        return bool(self._selector.get_map())

    def pump(self, timeout: float) -> None:
        """Handle whatever is ready within `timeout` seconds."""
        if not self.open:
            time.sleep(timeout)
            return
        for key, _ in self._selector.select(timeout):
            if isinstance(key.data, Capture):
                self._read(key.fileobj, key.data)  # type: ignore[arg-type]
            else:
                self._write(key.fileobj)  # type: ignore[arg-type]

    def drain(self, timeout: float) -> None:
        """Read until every pipe reaches EOF or `timeout` passes (a writer may linger)."""
        deadline = time.monotonic() + timeout
        while self.open and (remaining := deadline - time.monotonic()) > 0:
            self.pump(remaining)

    def close(self) -> None:
        self.stdout.end()  # a child that left its pipes open still gets its last line out
        self.stderr.end()
        for file in self._files:
            with contextlib.suppress(OSError):
                file.close()
        self._selector.close()

    def _start_feeding(self, stdin: IO[bytes]) -> None:
        if not self._pending:
            stdin.close()
            return
        os.set_blocking(stdin.fileno(), False)  # a partial write must not stall the loop
        self._selector.register(stdin, selectors.EVENT_WRITE, None)

    def _read(self, file: IO[bytes], capture: Capture) -> None:
        chunk = os.read(file.fileno(), _READ_CHUNK)
        if chunk:
            capture.feed(chunk)
        else:
            capture.end()
            self._finish(file)

    def _write(self, stdin: IO[bytes]) -> None:
        try:
            written = os.write(stdin.fileno(), self._pending[:_WRITE_CHUNK])
        except BlockingIOError:
            return
        except BrokenPipeError:  # the child stopped reading; that is its business
            self._finish(stdin)
            return
        self._pending = self._pending[written:]
        if not self._pending:
            self._finish(stdin)

    def _finish(self, file: IO[bytes]) -> None:
        self._selector.unregister(file)
        with contextlib.suppress(OSError):
            file.close()


def _splitter(on_line: LineHandler | None, stream: OutputStream) -> LineSplitter | None:
    if on_line is None:
        return None
    return LineSplitter(lambda line: on_line(stream, line), MAX_OUTPUT_LINE_BYTES)
