"""Feed a child's stdin and drain its stdout and stderr at once, keeping bounded output."""

from __future__ import annotations

import contextlib
import os
import selectors
import time
from typing import IO

_READ_CHUNK = 64 * 1024
_WRITE_CHUNK = 64 * 1024


class Capture:
    """The first `limit` bytes of a stream; the rest is read and dropped, so the child never
    blocks on a full pipe and the worker never holds more than `limit`."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.data = bytearray()
        self.truncated = False

    def feed(self, chunk: bytes) -> None:
        room = self.limit - len(self.data)
        if len(chunk) > room:
            self.truncated = True
        if room > 0:
            self.data += chunk[:room]


class StreamPump:
    """Moves bytes between the worker and one child's pipes without ever blocking on them."""

    def __init__(
        self,
        stdin: IO[bytes] | None,
        stdout: IO[bytes],
        stderr: IO[bytes],
        stdin_data: bytes,
        limit: int,
    ) -> None:
        self.stdout = Capture(limit)
        self.stderr = Capture(limit)
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
