"""API keys: hashed at rest, each job visible only to its key (or an admin), limits per key."""

from __future__ import annotations

import time
import uuid

import pytest
from conveyor_api.main import create_app
from conveyor_core.store.engine import make_sync_engine
from sqlalchemy import text
from support.clients import api_keys
from support.stack import Stack, running_stack

ECHO = {"type": "cmd.run", "params": {"command": "echo", "args": ["hi"]}}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):
    # No workers: submitted jobs stay queued, which the quota test needs.
    with running_stack(
        tmp_path_factory.mktemp("auth"),
        "sqlite",
        workers=(),
        CONVEYOR_AUTH_ENABLED="true",
        CONVEYOR_AUTH_CACHE_TTL_S="0.5",
        CONVEYOR_SUBMIT_RATE_PER_S="0.2",
        CONVEYOR_SUBMIT_BURST="5",
        CONVEYOR_MAX_QUEUED_PER_KEY="3",
        CONVEYOR_MAX_UPLOAD_BYTES="10000",
    ) as running:
        yield running


def test_openapi_declares_the_bearer_scheme_on_authenticated_routes():
    spec = create_app().openapi()
    scheme = spec["components"]["securitySchemes"]["HTTPBearer"]
    assert scheme["type"] == "http"
    assert scheme["scheme"] == "bearer"
    assert "conveyor-api keys create" in scheme["description"]
    for path, method in (("/v1/jobs", "post"), ("/v1/jobs/{job_id}", "get"), ("/v1/jobs", "get")):
        assert spec["paths"][path][method]["security"] == [{"HTTPBearer": []}], path
    assert "security" not in spec["paths"]["/healthz"]["get"]


def test_requests_without_a_valid_key_are_refused(stack: Stack):
    with stack.client() as anonymous:
        missing = anonymous.post("/v1/jobs", json=ECHO)
        assert missing.status_code == 401
        assert missing.headers["WWW-Authenticate"] == "Bearer"
        assert anonymous.get("/v1/jobs").status_code == 401
        assert anonymous.post("/transform").status_code == 401
        wrong = anonymous.get("/v1/jobs", headers={"Authorization": "Bearer cnv_nope"})
        assert wrong.status_code == 401
        other_scheme = anonymous.get("/v1/jobs", headers={"Authorization": "Basic Ym9iOng="})
        assert other_scheme.status_code == 401
        assert other_scheme.headers["WWW-Authenticate"] == "Bearer"
        assert anonymous.get("/healthz").status_code == 200  # probes need no key


def test_a_key_sees_only_its_own_jobs_and_an_admin_sees_all(stack: Stack):
    alice, bob = api_keys(stack, "create", "alice"), api_keys(stack, "create", "bob")
    root = api_keys(stack, "create", "root", "--admin")
    with (
        stack.client(api_key=alice) as as_alice,
        stack.client(api_key=bob) as as_bob,
        stack.client(api_key=root) as as_root,
    ):
        job_id = as_alice.post("/v1/jobs", json=ECHO).json()["id"]
        compat_id = as_alice.post("/execute", params={"command": "echo hi"}).json()["task_id"]
        assert as_alice.get(f"/v1/jobs/{job_id}").status_code == 200
        for path in (
            f"/v1/jobs/{job_id}",
            f"/status/{compat_id}",
            f"/result/{compat_id}",
            f"/v1/jobs/{job_id}/artifacts/model.skops",
        ):
            assert as_bob.get(path).status_code == 404, path
        assert as_bob.post(f"/v1/jobs/{job_id}/cancel").status_code == 404
        assert as_bob.get("/v1/jobs").json()["items"] == []
        mine = {item["id"] for item in as_alice.get("/v1/jobs").json()["items"]}
        assert mine == {job_id, compat_id}
        assert as_root.get(f"/v1/jobs/{job_id}").status_code == 200
        assert job_id in {item["id"] for item in as_root.get("/v1/jobs").json()["items"]}


def test_keys_are_hashed_at_rest_and_revocation_takes_effect(stack: Stack):
    secret = api_keys(stack, "create", "carol")
    engine = make_sync_engine(stack.env["CONVEYOR_DATABASE_URL"])
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT * FROM api_keys")).all()
    assert rows and not any(secret in str(value) for row in rows for value in row)
    with stack.client(api_key=secret) as as_carol:
        assert as_carol.get("/v1/jobs").status_code == 200
        api_keys(stack, "revoke", "carol")
        time.sleep(0.6)  # CONVEYOR_AUTH_CACHE_TTL_S
        assert as_carol.get("/v1/jobs").status_code == 401


def test_rate_limit_answers_429_with_retry_after(stack: Stack):
    secret = api_keys(stack, "create", f"rate-{uuid.uuid4().hex[:6]}")
    with stack.client(api_key=secret) as client:
        responses = [
            client.post("/execute", params={"command": "echo 'unbalanced"}) for _ in range(6)
        ]
    # Every submission takes a token, even one refused later for bad input.
    assert [r.status_code for r in responses[:5]] == [422] * 5
    assert responses[5].status_code == 429
    assert "rate limit" in responses[5].json()["detail"]
    assert int(responses[5].headers["Retry-After"]) >= 1


def test_queued_jobs_per_key_are_capped(stack: Stack):
    secret = api_keys(stack, "create", f"quota-{uuid.uuid4().hex[:6]}")
    with stack.client(api_key=secret) as client:
        accepted = [client.post("/v1/jobs", json=ECHO).status_code for _ in range(3)]
        refused = client.post("/v1/jobs", json=ECHO)
    assert accepted == [202, 202, 202]
    assert refused.status_code == 429
    assert "already queued" in refused.json()["detail"]


def test_a_key_reads_only_its_own_files_and_job_artifacts(stack: Stack):
    alice = api_keys(stack, "create", f"files-a-{uuid.uuid4().hex[:6]}")
    bob = api_keys(stack, "create", f"files-b-{uuid.uuid4().hex[:6]}")
    with stack.client(api_key=alice) as as_alice, stack.client(api_key=bob) as as_bob:
        stored = as_alice.put("/v1/files/sales.csv", content=b"city,value\nOslo,1\n")
        assert stored.status_code == 201, stored.text
        path = stored.json()["path"]
        assert path.startswith("uploads/") and path.endswith("/sales.csv")
        transform = {"type": "data.transform", "params": {"source": path, "steps": []}}
        assert as_alice.post("/v1/jobs", json=transform).status_code == 202
        refused = as_bob.post("/v1/jobs", json=transform)
        assert refused.status_code == 403 and "not yours" in refused.json()["detail"]
        job_id = as_alice.post("/v1/jobs", json=ECHO).json()["id"]
        theirs = {
            "type": "ml.train",
            "params": {
                "model": "logistic_regression",
                "dataset": "file",
                "source": f"jobs/{job_id}/output.parquet",
            },
        }
        assert as_bob.post("/v1/jobs", json=theirs).status_code == 403
        too_big = as_alice.put("/v1/files/big.csv", content=b"x" * 20_000)
        assert too_big.status_code == 413
        artifacts = stack.workdir / "artifacts" / path.rsplit("/", 1)[0]
        assert sorted(p.name for p in artifacts.iterdir()) == ["sales.csv"]  # no partial file
