"""The README's and getting-started.md's shell sessions, pasted into a shell against a live stack.

Every ```console block of the two documents runs, command by command and in order, in one
bash per document (so `ID=...` and downloaded files carry over), from a directory holding
the repository's `docs/examples/`, against a gateway and three real workers with
authentication off, as `make run` starts them. What each command prints must be what the
document shows, allowing for ids and timings: the convention is in support/doc_sessions.py.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from support.doc_sessions import (
    Command,
    Shell,
    live_command,
    live_lines,
    match_output,
    normalise,
    parse_sessions,
)
from support.packaging import uv_executable
from support.stack import Stack, running_stack

ROOT = Path(__file__).parents[2]
DOCUMENTS = ["README.md", "docs/getting-started.md"]
COMMAND_TIMEOUT_S = 60


def _uv_bin() -> Path:
    """Where `uv` is: the commands say `uv run ...`, as a user with uv on PATH types them."""
    found = uv_executable()
    assert Path(found).is_file(), "no uv: run `make install`"
    return Path(found).parent


def _session_env(stack: Stack, workdir: Path) -> dict[str, str]:
    """A user's terminal: the CLI pointed at the stack, no kubeconfig, 120 columns."""
    inherited = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("CONVEYOR_", "KUBERNETES_"))
        and key not in {"VIRTUAL_ENV", "COLUMNS", "LINES", "KUBECONFIG"}
    }
    return inherited | {
        "PATH": f"{_uv_bin()}{os.pathsep}{inherited.get('PATH', '')}",
        "UV_PROJECT": str(ROOT),  # `uv run` from the session's directory, as from the checkout
        "CONVEYOR_URL": stack.base_url,
        "KUBECONFIG": str(workdir / "no-kubeconfig"),
        "COLUMNS": "120",
    }


def _mismatch(command: Command, output: str) -> str:
    expected = "\n".join(command.expected) or "(nothing)"
    return (
        f"{command.source}: the output differs from the document's\n"
        f"$ {command.text}\n--- documented\n{expected}\n--- live\n{output.rstrip() or '(nothing)'}"
    )


@pytest.mark.timeout(300)
@pytest.mark.parametrize("document", DOCUMENTS)
def test_the_documented_sessions_paste_and_answer_as_shown(document: str, tmp_path: Path):
    commands = parse_sessions(ROOT / document, ROOT)
    assert commands, f"{document} has no ```console session"
    workdir = tmp_path / "session"
    shutil.copytree(ROOT / "docs" / "examples", workdir / "docs" / "examples")
    with (
        running_stack(tmp_path / "stack", "sqlite") as stack,
        Shell(workdir, _session_env(stack, workdir)) as shell,
    ):
        ids: dict[str, str] = {}
        for command in commands:
            try:
                output = shell.run(live_command(command.text, ids, stack.port), COMMAND_TIMEOUT_S)
            except TimeoutError as error:
                pytest.fail(f"{command.source}: $ {command.text}\n{error}")
            matched = match_output(command.expected, live_lines(output), ids)
            assert matched is not None, _mismatch(command, output)
            ids = matched


# --- the convention itself, without a stack


def test_a_command_goes_on_while_a_quote_or_a_backslash_leaves_it_open(tmp_path: Path):
    page = tmp_path / "page.md"
    page.write_text(
        "```sh\n$ not run\n```\n"
        "```console\n"
        "$ curl -s localhost:8000/a \\\n    -d '{\"a\":\n  1}'\n"
        '{"ok":true}\n\n'
        "$ ID=$(echo x |\n  cat)\n"
        "```\n"
    )
    first, second = parse_sessions(page, tmp_path)
    assert first.source == "page.md:5"
    assert first.text == "curl -s localhost:8000/a \\\n    -d '{\"a\":\n  1}'"
    assert first.expected == ['{"ok":true}']
    assert (second.text, second.expected) == ("ID=$(echo x |\n  cat)", [])


def test_ids_map_one_to_one_and_reach_later_commands():
    documented, live = (
        "f9bbf880-ac92-4442-806c-5c801ba608e3",
        "0b9e2c1e-5b53-4c1a-9d8f-3c1d2e4f5a6b",
    )
    other = "490a1b9f-af82-478a-9c24-3c6806fc7313"
    ids = match_output([f'{{"id":"{documented}"}}'], [f'{{"id":"{live}"}}'], {})
    assert ids == {documented: live}
    assert match_output([f"id {documented}"], [f"id {other}"], ids) is None
    assert match_output([f"id {other}"], [f"id {live}"], ids) is None  # one live job, two ids
    command = live_command(f"curl -s localhost:8000/v1/jobs/{documented}", ids, 51234)
    assert command == f"curl -s localhost:51234/v1/jobs/{live}"


def test_timings_are_placeholders_and_everything_else_counts():
    assert normalise("  ml.train succeeded ━━━╺━━ 100% 0:00:40") == normalise(
        "⠏ ml.train succeeded ━━━━━━━━ 100% 0:00:02"
    )
    assert normalise('{"at":"2026-11-27T14:28:27.519267Z","duration_s":0.038}') == normalise(
        '{"at":"2025-01-02T03:04:05Z","duration_s":1.5}'
    )
    assert normalise("wrote model.skops (951984 bytes)") == normalise("wrote model.skops (9 bytes)")
    assert match_output(['{"state":"succeeded"}'], ['{"state":"failed"}'], {}) is None
    assert match_output(["100%"], ["95%"], {}) is None


def test_ellipses_stand_for_lines_or_text():
    expected = ["id: 1", "...", 'data: {"state":"succeeded",...}']
    live = ["id: 1", "id: 2", "", 'data: {"state":"succeeded","attempts":1}']
    assert match_output(expected, live, {}) == {}
    assert match_output(expected, ["id: 1", 'data: {"state":"failed"}'], {}) is None
    assert match_output(["a", "..."], ["a"], {}) == {}
