"""A command that fails makes a failed job: its exit code, not the worker, decides.

`succeeded` reads as "the command worked" to users, scripts and alerts, so a non-zero
exit or a timeout ends the job `failed`, with the command's result kept, as CI systems
and Kubernetes Jobs do; `ok_exit_codes` names other codes that count as success.
"""

from __future__ import annotations

import httpx
from support.stack import Stack

BAD_DATE = {"command": "date", "args": ["--date=garbage"]}  # exits 1: "invalid date"


def finished(stack: Stack, client: httpx.Client, params: dict) -> dict:
    job = stack.submit(client, "cmd.run", params)
    return stack.wait_for(client, job["id"], {"succeeded", "failed"}, timeout=60)


def test_a_non_zero_exit_fails_the_job_and_keeps_its_result(stack: Stack, client: httpx.Client):
    job = finished(stack, client, BAD_DATE)
    assert job["state"] == "failed"
    assert job["error"] == "the command exited with code 1"
    assert job["result"]["exit_code"] == 1
    assert "invalid date" in job["result"]["stderr"]
    assert job["attempts"] == 1  # a failed command is an outcome, never retried


def test_a_timeout_fails_the_job(stack: Stack, client: httpx.Client):
    job = finished(stack, client, {"command": "sleep", "args": ["30"], "timeout_s": 2})
    assert job["state"] == "failed"
    assert job["error"] == "the command timed out after 2 s and was stopped"
    assert job["result"]["timed_out"] is True


def test_exit_codes_the_caller_accepts_are_a_success(stack: Stack, client: httpx.Client):
    job = finished(stack, client, {**BAD_DATE, "ok_exit_codes": [0, 1]})
    assert job["state"] == "succeeded", job
    assert job["result"]["exit_code"] == 1
