"""The web console at /ui, used as a person would: headless Chromium against a real stack.

Jobs are submitted through the API while the pages are open; the pages must show them
and follow them to their end without a reload. Chromium is Debian's (`make chromium`),
driven by Playwright; nothing is downloaded at run time.
With CONVEYOR_CONSOLE_SCREENSHOTS=DIR the job page and list screenshots are saved there
(`make console-screenshots` refreshes docs/img/).
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conveyor_api.routes.console import CONSOLE_DIR
from playwright.sync_api import Browser, Page, expect
from support.browser import chromium
from support.clients import api_keys
from support.stack import VENV_BIN, Stack, free_port, running_stack

SCREENSHOTS = os.environ.get("CONVEYOR_CONSOLE_SCREENSHOTS")
FINAL_STATES = {"succeeded", "failed", "cancelled"}

# A few seconds of training that reports progress as its trees grow.
TRAINING = {
    "dataset": "synthetic",
    "n_samples": 3000,
    "n_features": 20,
    "model": "random_forest",
    "hyperparameters": {"n_estimators": 240},
}
LONG_SLEEP = {"command": "sleep", "args": ["300"], "timeout_s": 600}
# The stack has no data worker: a data.transform job stays queued.
QUEUED_FOREVER = {"rows": [{"x": 1}], "steps": []}
# Catalog commands for these tests only: a shell that prints a line now and then (ticker),
# and a command whose program does not exist (its job fails).
CATALOG = {
    "echo": {"executable": "echo"},
    "sleep": {"executable": "sleep", "max_args": 1},
    "sh": {"executable": "sh", "max_args": 2},
    "broken": {"executable": "/nonexistent/conveyor-console-test"},
}


def ticker(lines: int) -> dict[str, object]:
    """cmd.run params: print `tick 1` .. `tick <lines>`, one every 0.5 s, then `done` on stderr."""
    script = f'for i in $(seq 1 {lines}); do echo "tick $i"; sleep 0.5; done; echo done >&2'
    return {"command": "sh", "args": ["-c", script]}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(
        tmp_path_factory.mktemp("console"),
        "postgres",
        workers=("ml", "cmd"),
        CONVEYOR_COMMAND_CATALOG=json.dumps(CATALOG),
    ) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh tab (own sessionStorage) that fails the test on a script error, a CSP
    violation or a request leaving the gateway."""
    context = browser.new_context(viewport={"width": 1200, "height": 800}, accept_downloads=True)
    tab = context.new_page()
    problems: list[str] = []
    tab.on("pageerror", lambda error: problems.append(f"script error: {error}"))
    tab.on(
        "console",
        lambda message: (
            problems.append(f"console: {message.text}")
            # The browser logs every 4xx fetch; the tests check those answers themselves.
            if message.type == "error" and not message.text.startswith("Failed to load resource")
            else None
        ),
    )
    tab.on(
        "request",
        lambda request: (
            problems.append(f"left the gateway: {request.url}")
            if not request.url.startswith(("http://127.0.0.1:", "blob:"))
            else None
        ),
    )
    yield tab
    context.close()
    assert problems == []


def job_row(page: Page, job_id: str):
    return page.locator(f'tr[data-job-id="{job_id}"]')


def mark_page(page: Page) -> None:
    """Leave a mark in the document; still there later means the page never reloaded."""
    page.evaluate("window.conveyorTestMark = true")


def assert_not_reloaded(page: Page) -> None:
    assert page.evaluate("window.conveyorTestMark") is True


def screenshot(page: Page, name: str) -> None:
    if SCREENSHOTS:
        page.set_viewport_size({"width": 1200, "height": 200})  # the page's own height
        page.screenshot(path=str(Path(SCREENSHOTS) / name), full_page=True)


def start_gateway(stack: Stack, name: str, port: int, **extra_env: str) -> str:
    """Another gateway on the stack's broker and job store; stopped with the stack."""
    argv = [str(VENV_BIN / "conveyor-api"), "serve", "--port", str(port)]
    stack.start_service(name, argv, **extra_env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while not ready(url):
        assert time.monotonic() < deadline, stack.services[name].log()
        time.sleep(0.2)
    return url


def ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=2).json()["status"] == "ok"
    except httpx.HTTPError:
        return False


def test_ui_pages_carry_a_strict_content_security_policy(stack: Stack, client: httpx.Client):
    for path, media_type in [
        ("/ui", "text/html"),
        ("/ui/", "text/html"),
        ("/ui/jobs/anything", "text/html"),
        ("/ui/static/job.js", "text/javascript"),
        ("/ui/static/console.css", "text/css"),
    ]:
        response = client.get(path)
        assert response.status_code == 200, path
        assert response.headers["content-type"].startswith(media_type), path
        policy = response.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "default-src 'none'" in policy
        assert "unsafe-inline" not in policy
        assert response.headers["x-content-type-options"] == "nosniff"
    for shipped in CONSOLE_DIR.iterdir():  # every file of the console is served
        if shipped.suffix != ".html":
            assert client.get(f"/ui/static/{shipped.name}").status_code == 200, shipped.name
    assert client.get("/ui/static/main.py").status_code == 404
    assert client.get("/ui/static/..%2Fmain.py").status_code == 404
    assert not [path for path in client.get("/openapi.json").json()["paths"] if "/ui" in path]


def test_the_list_shows_new_jobs_and_follows_their_state(
    stack: Stack, client: httpx.Client, page: Page
):
    page.goto(f"{stack.base_url}/ui/")
    expect(page.get_by_role("heading", name="Jobs")).to_be_visible()
    mark_page(page)
    training = stack.submit(client, "ml.train", TRAINING)["id"]
    echo = stack.submit(client, "cmd.run", {"command": "echo", "args": ["hi"]})["id"]
    broken = stack.submit(client, "cmd.run", {"command": "broken"})["id"]
    sleeper = stack.submit(client, "cmd.run", LONG_SLEEP)["id"]
    transform = stack.submit(client, "data.transform", QUEUED_FOREVER)["id"]

    expect(job_row(page, echo)).to_be_visible(timeout=10_000)
    expect(job_row(page, training).get_by_role("link")).to_have_text(training[:8])
    expect(job_row(page, training)).to_contain_text("ml.train")
    expect(job_row(page, echo).locator(".state")).to_have_text("succeeded", timeout=30_000)
    expect(job_row(page, broken).locator(".state")).to_have_text("failed", timeout=30_000)
    expect(job_row(page, sleeper).locator(".state")).to_have_text("running", timeout=30_000)
    assert client.post(f"/v1/jobs/{sleeper}/cancel").status_code == 202
    expect(job_row(page, sleeper).locator(".state")).to_have_text("cancelled", timeout=20_000)
    expect(job_row(page, training).locator(".state")).to_have_text("succeeded", timeout=120_000)
    expect(job_row(page, training)).to_contain_text("100%")
    expect(job_row(page, transform).locator(".state")).to_have_text("queued")
    assert_not_reloaded(page)
    screenshot(page, "console-list.png")

    page.get_by_label("Type").select_option("cmd.run")
    expect(job_row(page, training)).to_have_count(0)
    expect(job_row(page, echo)).to_be_visible()
    assert "type=cmd.run" in page.url  # a filtered list can be bookmarked
    page.get_by_label("State").select_option("failed")
    expect(job_row(page, echo)).to_have_count(0)
    expect(job_row(page, broken)).to_be_visible()
    page.get_by_label("Type").select_option("ml.train")
    expect(page.locator("#empty")).to_have_text("No jobs match these filters.")
    page.go_back()
    page.go_back()
    expect(page.get_by_label("State")).to_have_value("")
    expect(job_row(page, echo)).to_be_visible()
    expect(job_row(page, training)).to_have_count(0)

    job_row(page, echo).get_by_role("link").click()
    expect(page).to_have_url(f"{stack.base_url}/ui/jobs/{echo}")
    expect(page.locator("#job-state")).to_have_text("succeeded")


def test_a_job_page_follows_a_training_to_succeeded_live(
    stack: Stack, client: httpx.Client, page: Page
):
    streams: list[str] = []
    page.on(
        "request", lambda request: streams.append(request.url) if "/events" in request.url else None
    )
    job_id = stack.submit(client, "ml.train", TRAINING)["id"]
    page.goto(f"{stack.base_url}/ui/jobs/{job_id}")
    expect(page.locator("#job-id")).to_have_text(job_id)
    mark_page(page)

    progress_seen: list[float] = []
    deadline = time.monotonic() + 120
    while (state := page.locator("#job-state").inner_text()) not in FINAL_STATES:
        if state == "running":
            progress_seen.append(page.locator("#progress").evaluate("bar => bar.value"))
        assert time.monotonic() < deadline, f"still {state} after 120 s"
        time.sleep(0.05)

    assert state == "succeeded"
    assert len({p for p in progress_seen if 0 < p < 1}) >= 3, progress_seen
    assert progress_seen == sorted(progress_seen), "the progress bar went backwards"
    expect(page.locator("#progress-text")).to_have_text("100%")
    job = client.get(f"/v1/jobs/{job_id}").json()
    accuracy = page.locator("#result-summary dt:text-is('accuracy') + dd data")
    assert float(accuracy.get_attribute("value") or "nan") == job["result"]["accuracy"]
    expect(page.locator("#artifacts a")).to_have_text(["model.skops"])
    expect(page.get_by_role("button", name="Cancel job")).to_be_hidden()
    expect(page.locator("#job-finished time")).to_have_attribute("datetime", job["finished_at"])
    expect(page.locator("#live")).to_have_text("")
    assert_not_reloaded(page)
    assert len(streams) == 1, f"one stream brought every update: {streams}"

    with page.expect_download() as download:
        page.get_by_role("link", name="model.skops").click()
    saved = Path(download.value.path()).read_bytes()
    assert saved == client.get(f"/v1/jobs/{job_id}/artifacts/model.skops").content
    screenshot(page, "console-job.png")


def test_a_commands_output_appears_line_by_line(stack: Stack, client: httpx.Client, page: Page):
    job_id = stack.submit(client, "cmd.run", ticker(8))["id"]
    page.goto(f"{stack.base_url}/ui/jobs/{job_id}")
    expect(page.locator("#output .stdout").first).to_be_visible(timeout=60_000)
    assert page.locator("#job-state").inner_text() == "running"  # lines come as printed
    expect(page.locator("#job-state")).to_have_text("succeeded", timeout=30_000)
    expect(page.locator("#output .stderr")).to_have_text("done")
    # Every line since the page opened, in order, none twice.
    lines = [line.strip() for line in page.locator("#output .stdout").all_inner_texts()]
    assert lines == [f"tick {i}" for i in range(9 - len(lines), 9)], lines
    expect(page.locator("#result-summary")).to_contain_text("tick 1")


def test_job_data_is_shown_as_text_never_as_html(stack: Stack, client: httpx.Client, page: Page):
    markup = "<img src=x onerror=window.injected=1><b>bold</b>"
    job_id = stack.submit(client, "cmd.run", {"command": "echo", "args": [markup]})["id"]
    page.goto(f"{stack.base_url}/ui/jobs/{job_id}")
    expect(page.locator("#job-state")).to_have_text("succeeded", timeout=30_000)
    expect(page.locator("#result-summary")).to_contain_text(markup)
    expect(page.locator("#job-params")).to_contain_text(markup)
    assert page.locator("#job img, #job b").count() == 0
    assert page.evaluate("window.injected") is None


def test_a_failed_job_shows_its_error(stack: Stack, client: httpx.Client, page: Page):
    job_id = stack.submit(client, "cmd.run", {"command": "broken"})["id"]
    page.goto(f"{stack.base_url}/ui/jobs/{job_id}")
    expect(page.locator("#job-state")).to_have_text("failed", timeout=30_000)
    expect(page.get_by_role("heading", name="Error")).to_be_visible()
    error = client.get(f"/v1/jobs/{job_id}").json()["error"]
    expect(page.locator("#job-error")).to_have_text(error)
    expect(page.locator("#result-section")).to_be_hidden()


def test_a_long_error_wraps_so_its_end_is_readable(stack: Stack, client: httpx.Client, page: Page):
    # A target column the file lacks: the error lists every column of the file.
    header = ",".join(f"a_rather_long_column_name_{index}" for index in range(40))
    client.put("/v1/files/wide.csv", content=f"{header}\n{','.join(['1'] * 40)}\n".encode())
    params = {"model": "logistic_regression", "dataset": "file", "source": "uploads/local/wide.csv"}
    job_id = stack.submit(client, "ml.train", params)["id"]
    page.goto(f"{stack.base_url}/ui/jobs/{job_id}")
    expect(page.locator("#job-state")).to_have_text("failed", timeout=60_000)
    error = client.get(f"/v1/jobs/{job_id}").json()["error"]
    assert len(error) > 1000
    expect(page.locator("#job-error")).to_have_text(error)
    overflow = page.locator("#job-error").evaluate("box => box.scrollWidth - box.clientWidth")
    assert overflow <= 0  # nothing hidden to the right


def test_a_rows_copy_button_copies_the_full_job_id(stack: Stack, client: httpx.Client, page: Page):
    job_id = stack.submit(client, "data.transform", QUEUED_FOREVER)["id"]
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=stack.base_url)
    page.goto(f"{stack.base_url}/ui/")
    row = job_row(page, job_id)
    expect(row.locator("code")).to_have_text(job_id[:8])
    row.get_by_role("button", name=f"Copy the full id of job {job_id[:8]}").click()
    expect(row.locator(".copy-id")).to_have_text("copied")
    assert page.evaluate("navigator.clipboard.readText()") == job_id


def test_cancel_a_long_sleep_from_its_page(stack: Stack, client: httpx.Client, page: Page):
    job_id = stack.submit(client, "cmd.run", LONG_SLEEP)["id"]
    page.goto(f"{stack.base_url}/ui/jobs/{job_id}")
    expect(page.locator("#job-state")).to_have_text("running", timeout=30_000)
    mark_page(page)
    page.get_by_role("button", name="Cancel job").click()
    expect(page.locator("#job-state")).to_have_text("cancelled", timeout=20_000)
    expect(page.get_by_role("button", name="Cancel job")).to_be_hidden()
    expect(page.locator("#job-error")).to_have_text("cancelled by request")
    assert client.get(f"/v1/jobs/{job_id}").json()["state"] == "cancelled"
    assert_not_reloaded(page)


def test_a_job_page_resumes_after_its_gateway_restarts(
    stack: Stack, client: httpx.Client, page: Page
):
    port = free_port()
    url = start_gateway(stack, "api-restarting", port)
    streams: list[dict[str, str]] = []
    page.on(
        "request",
        lambda request: streams.append(request.headers) if "/events" in request.url else None,
    )
    job_id = stack.submit(client, "cmd.run", ticker(30))["id"]
    page.goto(f"{url}/ui/jobs/{job_id}")
    expect(page.locator("#output .stdout").first).to_be_visible(timeout=60_000)
    mark_page(page)

    gateway = stack.retire("api-restarting")
    os.killpg(gateway.process.pid, signal.SIGTERM)  # it ends its streams, then exits
    gateway.process.wait(timeout=30)
    expect(page.locator("#live")).to_have_text("Reconnecting…")
    start_gateway(stack, "api-restarted", port)

    expect(page.locator("#job-state")).to_have_text("succeeded", timeout=90_000)
    lines = [line.strip() for line in page.locator("#output .stdout").all_inner_texts()]
    assert lines == [f"tick {i}" for i in range(31 - len(lines), 31)], "a gap or a repeat"
    assert any("last-event-id" in headers for headers in streams[1:]), streams
    assert_not_reloaded(page)


def test_a_page_for_an_unknown_job_says_so(stack: Stack, page: Page):
    for job_id in ("00000000-0000-4000-8000-000000000000", "not-a-job"):
        page.goto(f"{stack.base_url}/ui/jobs/{job_id}")
        expect(page.get_by_role("alert")).to_contain_text(f"No job {job_id} here")
        expect(page.locator("#job")).to_be_hidden()


STREAM = (
    'id: 1\r\nevent: state\r\ndata: {"state":"running"}\r\n\r\n'
    ": keep-alive\n\n"
    "id: 2\nevent: output\ndata: naïve ✓\ndata: second line\n\n"
    "data: without an id\n\n"
    'id: 3\nevent: progress\ndata: {"progress":0.5'  # cut off: never dispatched
).encode()
READ_STREAM = """async (chunks) => {
  const { readEvents } = await import("/ui/static/sse.js");
  const body = new ReadableStream({
    start(controller) {
      for (const chunk of chunks) controller.enqueue(new Uint8Array(chunk));
      controller.close();
    },
  });
  const events = [];
  for await (const event of readEvents(body)) events.push(event);
  return events;
}"""


def test_the_event_stream_parser_gives_the_same_events_however_the_bytes_arrive(
    stack: Stack, page: Page
):
    page.goto(f"{stack.base_url}/ui/")  # sse.js runs as the console runs it
    expected = [
        {"id": "1", "event": "state", "data": '{"state":"running"}'},
        {"id": "2", "event": "output", "data": "naïve ✓\nsecond line"},
        {"id": "2", "event": "message", "data": "without an id"},  # ids carry over
    ]
    # Split anywhere: between \r and \n, inside a UTF-8 character, one byte at a time.
    for size in (1, 2, 3, 5, 8, 13, len(STREAM)):
        chunks = [list(STREAM[i : i + size]) for i in range(0, len(STREAM), size)]
        assert page.evaluate(READ_STREAM, chunks) == expected, f"chunks of {size} bytes"


# --- with authentication on


@pytest.fixture(scope="module")
def secured_url(stack: Stack) -> str:
    return start_gateway(stack, "api-secured", free_port(), CONVEYOR_AUTH_ENABLED="true")


def submit_as(stack: Stack, url: str, key: str, job_type: str, params: dict) -> str:
    with httpx.Client(
        base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30
    ) as as_key:
        return stack.submit(as_key, job_type, params)["id"]


def enter_key(page: Page, key: str) -> None:
    page.get_by_role("textbox", name="API key").fill(key)
    page.get_by_role("button", name="Use this key").click()


def test_with_auth_a_key_sees_and_cancels_only_its_own_jobs(
    stack: Stack, secured_url: str, page: Page
):
    alice, bob = api_keys(stack, "create", "alice"), api_keys(stack, "create", "bob")
    alices_job = submit_as(stack, secured_url, alice, "data.transform", QUEUED_FOREVER)
    bobs_job = submit_as(stack, secured_url, bob, "data.transform", QUEUED_FOREVER)

    page.goto(f"{secured_url}/ui/")
    expect(page.locator("#key-message")).to_have_text(re.compile("needs an API key"))
    enter_key(page, "cnv_not-a-key")
    expect(page.locator("#key-message")).to_contain_text("refused this key")
    enter_key(page, bob)
    expect(job_row(page, bobs_job)).to_be_visible()
    expect(job_row(page, alices_job)).to_have_count(0)
    expect(page.locator("#key-panel")).to_be_hidden()
    expect(page.locator("#key-hint")).to_have_text(f"{bob[:8]}…")
    assert "cnv_" not in page.url
    assert page.evaluate("sessionStorage.getItem('conveyor.apiKey')") == bob

    # Bob's job: its page follows it and Bob may cancel it.
    job_row(page, bobs_job).get_by_role("link").click()
    expect(page.locator("#job-state")).to_have_text("queued")
    page.get_by_role("button", name="Cancel job").click()
    expect(page.locator("#job-state")).to_have_text("cancelled")
    # Alice's job does not exist for Bob.
    page.goto(f"{secured_url}/ui/jobs/{alices_job}")
    expect(page.get_by_role("alert")).to_contain_text("belongs to another API key")

    page.get_by_role("button", name="Forget key").click()
    expect(page.locator("#key-panel")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('conveyor.apiKey')") is None


def test_with_auth_an_admin_sees_every_job_and_downloads_with_its_key(
    stack: Stack, secured_url: str, page: Page
):
    carol, admin = api_keys(stack, "create", "carol"), api_keys(stack, "create", "ops", "--admin")
    carols_queued = submit_as(stack, secured_url, carol, "data.transform", QUEUED_FOREVER)
    carols_training = submit_as(stack, secured_url, carol, "ml.train", TRAINING)
    page.goto(f"{secured_url}/ui/")
    enter_key(page, admin)
    expect(job_row(page, carols_queued)).to_be_visible()
    expect(job_row(page, carols_training)).to_be_visible()

    # A link cannot carry the key: the page fetches the file with it.
    page.goto(f"{secured_url}/ui/jobs/{carols_training}")
    expect(page.locator("#job-state")).to_have_text("succeeded", timeout=120_000)
    with page.expect_download() as download:
        page.get_by_role("link", name="model.skops").click()
    assert download.value.suggested_filename == "model.skops"
    assert Path(download.value.path()).stat().st_size > 1000

    page.goto(f"{secured_url}/ui/jobs/{carols_queued}")
    page.get_by_role("button", name="Cancel job").click()
    expect(page.locator("#job-state")).to_have_text("cancelled")
