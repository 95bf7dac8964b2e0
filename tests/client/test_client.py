"""ConveyorClient and AsyncConveyorClient against a real gateway: every call, every error."""

from __future__ import annotations

import io
import time
import uuid

import httpx
import pytest
from conveyor_client import (
    AsyncConveyorClient,
    Conflict,
    ConnectionFailed,
    ConveyorClient,
    Forbidden,
    JobState,
    NotFound,
    RateLimited,
    Unauthorized,
    ValidationFailed,
)
from conveyor_core.jobs import JOB_TYPES
from support.clients import KeyedStack, api_keys
from support.stack import free_port

ECHO = {"command": "echo", "args": ["hello"]}


def poll(client: ConveyorClient, job_id: uuid.UUID, states: set[JobState], timeout: float = 60):
    deadline = time.monotonic() + timeout
    while (job := client.get(job_id)).state not in states:
        assert time.monotonic() < deadline, f"job {job_id} still {job.state}"
        time.sleep(0.2)
    return job


@pytest.fixture
def client(stack_with_keys: KeyedStack):
    with ConveyorClient(stack_with_keys.stack.base_url, stack_with_keys.user_key) as conveyor:
        yield conveyor


def test_submit_get_list_and_download(client: ConveyorClient, tmp_path):
    accepted = client.submit("ml.train", {"dataset": "wine", "model": "logistic_regression"})
    assert accepted.state is JobState.QUEUED and accepted.type == "ml.train"
    job = poll(client, accepted.id, {JobState.SUCCEEDED, JobState.FAILED})
    assert job.state is JobState.SUCCEEDED, job.error
    assert job.result is not None and job.result["dataset"] == "wine"
    assert job.progress == 1.0 and job.artifacts == ["model.skops"]

    page = client.list(job_type="ml.train", state=JobState.SUCCEEDED, limit=10)
    assert accepted.id in [item.id for item in page.items]

    size = client.download_artifact(accepted.id, "model.skops", tmp_path / "model.skops")
    buffer = io.BytesIO()
    assert client.download_artifact(accepted.id, "model.skops", buffer) == size
    assert (tmp_path / "model.skops").read_bytes() == buffer.getvalue()
    assert buffer.getvalue()[:2] == b"PK"  # skops files are zip archives


def test_iter_jobs_follows_every_page(client: ConveyorClient):
    submitted = {client.submit("cmd.run", ECHO).id for _ in range(3)}
    seen = [job.id for job in client.iter_jobs(job_type="cmd.run", page_size=1)]
    assert submitted <= set(seen)
    assert len(seen) == len(set(seen))


def test_an_idempotency_key_submits_once(client: ConveyorClient):
    key = f"nightly-{uuid.uuid4()}"
    first = client.submit("cmd.run", ECHO, idempotency_key=key)
    again = client.submit("cmd.run", ECHO, idempotency_key=key)
    assert again.id == first.id
    with pytest.raises(Conflict) as caught:
        client.submit("cmd.run", {"command": "date"}, idempotency_key=key)
    assert caught.value.status == 409


def test_upload_then_read_it_as_a_source(client: ConveyorClient, tmp_path):
    (tmp_path / "points.jsonl").write_text('{"x": 1}\n{"x": 2}\n{"x": 4}\n')
    stored = client.upload_file(tmp_path / "points.jsonl")
    from_bytes = client.upload_file(b'{"x": 8}\n', name="more.jsonl")
    assert stored.size == 27 and from_bytes.path.endswith("/more.jsonl")
    steps = [{"op": "aggregate", "group_by": [], "aggregations": [{"column": "x", "func": "sum"}]}]
    accepted = client.submit("data.transform", {"source": stored.path, "steps": steps})
    job = poll(client, accepted.id, {JobState.SUCCEEDED, JobState.FAILED})
    assert job.result is not None and job.result["rows"] == [{"x_sum": 7}], job.error


def test_cancel_then_conflict_on_a_second_cancel(client: ConveyorClient):
    accepted = client.submit("cmd.run", {"command": "sleep", "args": ["60"]})
    poll(client, accepted.id, {JobState.RUNNING})
    assert client.cancel(accepted.id).cancel_requested
    assert poll(client, accepted.id, {JobState.CANCELLED}).error == "cancelled by request"
    with pytest.raises(Conflict, match="already finished"):
        client.cancel(accepted.id)


def test_job_types_are_the_registrys(client: ConveyorClient):
    types = client.job_types()
    assert [t.name for t in types] == list(JOB_TYPES)
    assert {t.queue for t in types} == {t.queue for t in JOB_TYPES.values()}


def test_queue_status_is_for_admin_keys(stack_with_keys: KeyedStack, client: ConveyorClient):
    with pytest.raises(Forbidden) as caught:
        client.queues()
    assert caught.value.status == 403
    with ConveyorClient(stack_with_keys.stack.base_url, stack_with_keys.admin_key) as admin:
        queues = admin.queues()
    assert [q.job_type for q in queues] == list(JOB_TYPES)
    assert all(q.consumers == 1 for q in queues)


def test_errors_carry_the_status_and_the_apis_detail(client: ConveyorClient):
    with pytest.raises(ValidationFailed) as invalid:
        client.submit(
            "ml.train", {"model": "random_forest", "hyperparameters": {"n_estimators": 0}}
        )
    assert invalid.value.status == 422
    (field,) = invalid.value.fields
    assert field.field == "params.hyperparameters.n_estimators"
    assert field.loc == (
        "body",
        "ml.train",
        "params",
        "random_forest",
        "hyperparameters",
        "n_estimators",
    )
    assert "greater than or equal to 1" in field.msg

    missing = uuid.uuid4()
    with pytest.raises(NotFound, match=f"job {missing} not found"):
        client.get(missing)
    with pytest.raises(NotFound, match="has no artifact"):
        client.download_artifact(client.submit("cmd.run", ECHO).id, "none.txt", io.BytesIO())


def test_a_missing_key_is_unauthorized(stack_with_keys: KeyedStack, monkeypatch):
    monkeypatch.delenv("CONVEYOR_API_KEY", raising=False)
    with ConveyorClient(stack_with_keys.stack.base_url) as anonymous, pytest.raises(Unauthorized):
        anonymous.list()


def test_url_and_key_come_from_the_environment(stack_with_keys: KeyedStack, monkeypatch):
    monkeypatch.setenv("CONVEYOR_URL", stack_with_keys.stack.base_url + "/")
    monkeypatch.setenv("CONVEYOR_API_KEY", stack_with_keys.user_key)
    with ConveyorClient() as conveyor:
        assert conveyor.base_url == stack_with_keys.stack.base_url
        assert conveyor.list(limit=1).items is not None


def test_an_unreachable_gateway_is_a_connection_error_naming_it():
    url = f"http://127.0.0.1:{free_port()}"
    with ConveyorClient(url) as conveyor, pytest.raises(ConnectionFailed) as caught:
        conveyor.get(uuid.uuid4())
    assert caught.value.url == url and url in str(caught.value)


def test_the_rate_limit_says_when_to_retry(stack_with_keys: KeyedStack):
    # A key of its own: the limit is per key, and the other tests' keys keep their budget.
    secret = api_keys(stack_with_keys.stack, "create", f"burst-{uuid.uuid4().hex[:6]}")

    def submit_a_burst(conveyor: ConveyorClient) -> None:
        for _ in range(40):  # 10 at once, then 5/s: refused well before the 40th
            conveyor.submit("cmd.run", ECHO)

    with (
        ConveyorClient(stack_with_keys.stack.base_url, secret) as conveyor,
        pytest.raises(RateLimited) as caught,
    ):
        submit_a_burst(conveyor)
    assert caught.value.status == 429
    assert caught.value.retry_after is not None and caught.value.retry_after > 0


# --- the same API for asyncio


@pytest.mark.anyio
async def test_the_async_client_submits_lists_downloads_and_reports_errors(
    stack_with_keys: KeyedStack, tmp_path
):
    url, key = stack_with_keys.stack.base_url, stack_with_keys.user_key
    async with AsyncConveyorClient(url, key) as conveyor:
        accepted = await conveyor.submit(
            "ml.train", {"model": "gradient_boosting", "hyperparameters": {"n_estimators": 5}}
        )
        deadline = time.monotonic() + 60
        while (job := await conveyor.get(accepted.id)).state is not JobState.SUCCEEDED:
            assert not job.state.is_final and time.monotonic() < deadline, job.error
            await _sleep(0.2)
        assert job.result is not None and job.result["model"] == "gradient_boosting"

        ids = [item.id async for item in conveyor.iter_jobs(job_type="ml.train", page_size=1)]
        assert accepted.id in ids and len(ids) == len(set(ids))
        assert [t.name for t in await conveyor.job_types()] == list(JOB_TYPES)

        buffer = io.BytesIO()
        size = await conveyor.download_artifact(accepted.id, "model.skops", buffer)
        assert size == len(buffer.getvalue()) > 0
        await conveyor.download_artifact(accepted.id, "model.skops", tmp_path / "m.skops")
        assert (tmp_path / "m.skops").read_bytes() == buffer.getvalue()

        (tmp_path / "in.csv").write_text("a\n1\n")
        stored = await conveyor.upload_file(tmp_path / "in.csv")
        assert stored.size == 4

        with pytest.raises(ValidationFailed) as invalid:
            await conveyor.submit("cmd.run", {"command": "echo", "timeout_s": 0})
        assert [f.field for f in invalid.value.fields] == ["params.timeout_s"]
        with pytest.raises(NotFound):
            await conveyor.cancel(uuid.uuid4())
        with pytest.raises(Forbidden):
            await conveyor.queues()
        assert (await conveyor.ready()).status == "ok"

    async with AsyncConveyorClient(f"http://127.0.0.1:{free_port()}") as nowhere:
        with pytest.raises(ConnectionFailed):
            await nowhere.list()


async def _sleep(seconds: float) -> None:
    import anyio

    await anyio.sleep(seconds)


def test_error_statuses_map_to_their_classes():
    from conveyor_client.errors import (
        PayloadTooLarge,
        ServerError,
        Unavailable,
        error_from_response,
    )

    request = httpx.Request("POST", "http://conveyor.test/v1/jobs", json={"type": "cmd.run"})
    cases = {
        401: Unauthorized,
        403: Forbidden,
        404: NotFound,
        409: Conflict,
        413: PayloadTooLarge,
        422: ValidationFailed,
        429: RateLimited,
        503: Unavailable,
        500: ServerError,
        502: ServerError,
    }
    for status, kind in cases.items():
        response = httpx.Response(
            status, json={"detail": "why"}, headers={"Retry-After": "5"}, request=request
        )
        error = error_from_response(response)
        assert type(error) is kind, status
        assert (error.status, error.detail, error.retry_after) == (status, "why", 5.0)
    plain = error_from_response(httpx.Response(502, text="Bad Gateway", request=request))
    assert plain.detail == "Bad Gateway" and plain.retry_after is None
