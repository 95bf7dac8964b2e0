"""cmd.run's output reaches the job's event stream line by line, as the command prints it."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import pytest
from conveyor_core.artifacts import ArtifactStore
from conveyor_core.jobs.cmd import CommandParams
from conveyor_core.settings import DEFAULT_COMMAND_CATALOG, CatalogCommand, Settings
from conveyor_core.store.worker_ops import OutputLine
from conveyor_core.worker.context import JobContext
from conveyor_worker_cmd.job import run
from conveyor_worker_cmd.streams import LineSplitter

PYTHON = "/usr/bin/python3"
requires_python = pytest.mark.skipif(not os.path.exists(PYTHON), reason=f"needs {PYTHON}")


class RecordingSink:
    """Stands in for WorkerJobStore.append_output: what was stored, and when."""

    def __init__(self) -> None:
        self.batches: list[tuple[float, list[OutputLine]]] = []

    def __call__(self, job_id: uuid.UUID, lines: list[OutputLine], attempt: int) -> bool:
        assert attempt == 1
        self.batches.append((time.monotonic(), lines))
        return True

    @property
    def lines(self) -> list[tuple[str, str]]:
        return [(line.stream, line.line) for _, batch in self.batches for line in batch]


def context(tmp_path: Path, sink: RecordingSink, **overrides: object) -> JobContext:
    catalog = {**DEFAULT_COMMAND_CATALOG, "python": CatalogCommand(executable=PYTHON, max_args=4)}
    settings = Settings(command_catalog=catalog).model_copy(update=overrides)
    return JobContext(uuid.uuid4(), settings, ArtifactStore(str(tmp_path)), output_sink=sink)


def python(code: str) -> CommandParams:
    return CommandParams.model_validate({"command": "python", "args": ["-c", code]})


@requires_python
def test_lines_are_stored_while_the_command_runs(tmp_path: Path) -> None:
    sink = RecordingSink()
    ctx = context(tmp_path, sink)
    code = "import time\nfor i in range(4):\n    print(i, flush=True)\n    time.sleep(0.5)"
    started = time.monotonic()
    run(python(code), ctx)
    returned = time.monotonic()
    ctx.flush_output()  # what the runtime does before writing the final state
    assert sink.lines == [("stdout", str(i)) for i in range(4)]
    first_stored = sink.batches[0][0]
    assert first_stored - started < 1.0 and returned - first_stored > 1.0
    assert len(sink.batches) >= 3  # batched per CONVEYOR_EVENTS_OUTPUT_INTERVAL_S, not at exit


@requires_python
def test_only_the_first_lines_of_a_chatty_command_are_kept(tmp_path: Path) -> None:
    sink = RecordingSink()
    ctx = context(tmp_path, sink, events_max_output_lines=10)
    result = run(python("import sys\nfor i in range(10000): print(i, file=sys.stderr)"), ctx)
    ctx.flush_output()
    assert sink.lines == [("stderr", str(i)) for i in range(10)]
    assert len(result.stderr.splitlines()) == 10000


def test_lines_are_cut_at_line_breaks_and_at_the_length_cap() -> None:
    lines: list[str] = []

    def keep(line: str) -> bool:
        lines.append(line)
        return True

    splitter = LineSplitter(keep, max_line_bytes=8)
    for chunk in (b"one\r\ntw", b"o\n\n", b"x" * 20, b"\nlast", "é".encode()[:1]):
        splitter.feed(chunk)
    assert lines == ["one", "two", "", "x" * 8, "x" * 8, "xxxx"]
    splitter.close()
    assert lines[-1] == "last\ufffd"  # an unfinished character is replaced, not raised


def test_no_line_is_split_off_once_the_receiver_declines() -> None:
    lines: list[str] = []

    def two_only(line: str) -> bool:
        lines.append(line)
        return len(lines) < 2

    splitter = LineSplitter(two_only, max_line_bytes=8)
    splitter.feed(b"a\nb\nc\n" + b"y" * 100)
    splitter.feed(b"\nd\n")
    splitter.close()
    assert lines == ["a", "b"]
