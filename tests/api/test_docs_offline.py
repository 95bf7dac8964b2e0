"""`/docs` and `/redoc` work with no network at all, under a strict Content-Security-Policy.

Headless Chromium loads each page from a gateway; any request that leaves the gateway,
any script error and any CSP violation fails the test (the same watch as the console's).
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect
from support.browser import chromium
from support.stack import Stack, running_stack

REDOC_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("docs"), "sqlite", workers=()) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(offline=False)
    tab = context.new_page()
    problems: list[str] = []
    tab.on("pageerror", lambda error: problems.append(f"script error: {error}"))
    tab.on(
        "console",
        lambda message: (
            problems.append(f"console: {message.text}") if message.type == "error" else None
        ),
    )

    def outside(request) -> None:  # cut off: nothing but the gateway answers
        if not request.url.startswith(("http://127.0.0.1:", "blob:", "data:")):
            problems.append(f"left the gateway: {request.url}")

    tab.on("request", outside)
    tab.route(
        "**/*",
        lambda route: (
            route.continue_()
            if route.request.url.startswith(("http://127.0.0.1:", "blob:", "data:"))
            else route.abort("internetdisconnected")
        ),
    )
    yield tab
    context.close()
    # ReDoc's "powered by" footer always asks for its logo on a CDN (no option turns it
    # off): the page's policy refuses it, and the footer shows its text. Nothing else may.
    assert [problem for problem in problems if REDOC_LOGO not in problem] == []


def test_swagger_ui_renders_every_route_from_the_gateway_alone(stack: Stack, page: Page):
    page.goto(f"{stack.base_url}/docs")
    expect(page.locator(".opblock-summary-path", has_text="/v1/jobs").first).to_be_visible(
        timeout=20_000
    )
    expect(page.locator(".info .title")).to_contain_text("Conveyor")


def test_redoc_renders_from_the_gateway_alone(stack: Stack, page: Page):
    refused: list[str] = []
    page.on("console", lambda message: refused.append(message.text))
    page.goto(f"{stack.base_url}/redoc")
    expect(page.get_by_text("Queue a job.").first).to_be_visible(timeout=20_000)
    page.wait_for_timeout(500)
    # Its one outside request is refused by the policy, not by the cut network alone.
    assert any(REDOC_LOGO in text and "Content Security Policy" in text for text in refused)


def test_the_pages_carry_a_csp_that_allows_scripts_from_the_gateway_only(stack: Stack):
    for path in ("/docs", "/redoc", "/docs/static/swagger-ui-bundle.js"):
        response = httpx.get(f"{stack.base_url}{path}")
        assert response.status_code == 200
        policy = response.headers["content-security-policy"]
        assert "script-src 'self';" in policy and "default-src 'none'" in policy
        assert "cdn" not in response.text[:2000].lower() or path.endswith(".js")
    assert httpx.get(f"{stack.base_url}/docs/static/../main.py").status_code == 404
