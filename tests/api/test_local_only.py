"""Authentication off (`make run`): only the local machine's own clients are answered.

A web page the user opens can reach a gateway on 127.0.0.1 through DNS rebinding (its
own host name, resolved to 127.0.0.1) or a cross-site form POST to the seed-compatible
endpoints, which need no body. The first carries a foreign Host, the second a foreign
Origin; both are refused before anything runs.
"""

from __future__ import annotations

import pytest
from support.stack import Stack, running_stack


@pytest.fixture(scope="module")
def open_stack(tmp_path_factory: pytest.TempPathFactory):
    with running_stack(tmp_path_factory.mktemp("local-only"), "sqlite", workers=()) as stack:
        assert stack.env["CONVEYOR_AUTH_ENABLED"] == "false"
        yield stack


def jobs_listed(stack: Stack) -> int:
    with stack.client() as client:
        return len(client.get("/v1/jobs", params={"limit": 500}).json()["items"])


def test_a_foreign_host_name_is_refused(open_stack: Stack):
    with open_stack.client() as client:
        for path in ("/v1/jobs", "/healthz", "/console/"):
            rebound = client.get(path, headers={"Host": f"attacker.example:{open_stack.port}"})
            assert rebound.status_code == 400, (path, rebound.text)
            assert "CONVEYOR_LOCAL_HOSTS" in rebound.text
        for host in ("127.0.0.1", "localhost", "[::1]"):
            local = client.get("/healthz", headers={"Host": f"{host}:{open_stack.port}"})
            assert local.status_code == 200, host


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://attacker.example"},
        {"Origin": "null"},  # a sandboxed frame or a data: URL
        {"Sec-Fetch-Site": "cross-site"},
    ],
)
def test_a_cross_site_post_is_refused_and_queues_nothing(open_stack: Stack, headers):
    before = jobs_listed(open_stack)
    with open_stack.client() as client:
        for path, kwargs in (
            ("/execute", {"params": {"command": "echo pwned"}}),
            ("/train", {}),
            ("/v1/jobs", {"json": {"type": "cmd.run", "params": {"command": "echo"}}}),
        ):
            response = client.post(path, headers=headers, **kwargs)
            assert response.status_code == 403, (path, response.text)
    assert jobs_listed(open_stack) == before


def test_local_pages_and_clients_still_submit(open_stack: Stack):
    with open_stack.client() as client:
        own_page = {
            "Origin": f"http://127.0.0.1:{open_stack.port}",
            "Sec-Fetch-Site": "same-origin",
        }
        for headers in ({}, own_page):
            response = client.post("/execute", params={"command": "echo hi"}, headers=headers)
            assert response.status_code in (200, 202), response.text


def test_with_authentication_on_the_key_is_the_guard(tmp_path):
    with running_stack(tmp_path, "sqlite", workers=(), CONVEYOR_AUTH_ENABLED="true") as stack:
        response = stack.client().get("/healthz", headers={"Host": "conveyor.example.com"})
        assert response.status_code == 200
