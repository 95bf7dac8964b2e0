"""Values PostgreSQL cannot store: NaN, ±Infinity and NUL, in params and in job output.

Submissions share one batched INSERT; one such value in one request used to fail the
whole batch, so every concurrent submitter got a 500 on PostgreSQL. Now the value is a
422 naming its field, a row the database still refuses fails alone, and a job whose
output holds them still finishes.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from support.stack import Stack

GOOD = {"type": "cmd.run", "params": {"command": "echo", "args": ["fine"]}}

# (raw JSON of the params, a piece of the field's path the 422 must name)
UNSTORABLE = [
    ('{"rows": [{"a": NaN}]}', "rows"),
    (
        '{"rows": [{"a": 1}], "steps": [{"op": "compute", "column": "b", "left": "a", '
        '"operator": "mul", "right": Infinity}]}',
        "right",
    ),
    (
        '{"rows": [{"a": 1}], "steps": [{"op": "filter", "column": "a", "cmp": "in", '
        '"value": [1, -Infinity]}]}',
        "value",
    ),
    ('{"rows": [{"a": "x\\u0000y"}]}', "rows"),
    ('{"rows": [{"a\\u0000": 1}]}', "rows"),
    ('{"rows": [{"a": 1}], "steps": [{"op": "rename", "mapping": {"a": "b\\u0000"}}]}', "mapping"),
]
CMD_UNSTORABLE = [
    ('{"command": "echo", "stdin": "\\u0000"}', "stdin"),
    ('{"command": "echo", "args": ["a\\u0000"]}', "args"),
]


def raw_submission(job_type: str, params_json: str) -> bytes:
    return f'{{"type": "{job_type}", "params": {params_json}}}'.encode()


def submit_raw(stack: Stack, body: bytes) -> httpx.Response:
    return httpx.post(
        f"{stack.base_url}/v1/jobs",
        content=body,
        headers={"Content-Type": "application/json"},
        timeout=30,
    )


@pytest.mark.parametrize(
    ("job_type", "params_json", "field"),
    [("data.transform", *case) for case in UNSTORABLE]
    + [("cmd.run", *case) for case in CMD_UNSTORABLE],
)
def test_an_unstorable_value_is_a_422_naming_its_field(
    stack: Stack, job_type: str, params_json: str, field: str
):
    response = submit_raw(stack, raw_submission(job_type, params_json))
    assert response.status_code == 422, response.text
    errors: list[dict[str, Any]] = response.json()["detail"]
    assert any(field in map(str, error["loc"]) for error in errors), errors
    assert any(
        "finite number" in error["msg"] or "NUL character" in error["msg"] for error in errors
    ), errors


def test_bad_values_among_concurrent_submissions_fail_only_their_own_request(
    stack: Stack, client: httpx.Client
):
    bodies = [json.dumps(GOOD).encode()] * 24 + [
        raw_submission("data.transform", params) for params, _ in UNSTORABLE
    ] * 2
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda body: submit_raw(stack, body), bodies))
    statuses = [answer.status_code for answer in answers]
    assert statuses == [202] * 24 + [422] * (2 * len(UNSTORABLE)), statuses
    for answer in answers[:24]:
        job = stack.wait_for(client, answer.json()["id"], {"succeeded", "failed"})
        assert job["state"] == "succeeded", job


def test_a_job_whose_output_holds_nul_still_finishes_with_it_replaced(
    stack: Stack, client: httpx.Client
):
    # coreutils echo: -e turns the two characters "\0" into a NUL byte on stdout.
    job = stack.submit(client, "cmd.run", {"command": "echo", "args": ["-e", "a\\0b"]})
    done = stack.wait_for(client, job["id"], {"succeeded", "failed"}, timeout=30)
    assert done["state"] == "succeeded", done
    assert done["result"]["stdout"] == "a\ufffdb\n"
