"""The gateway's job messages are exactly the ones Celery itself would build."""

from __future__ import annotations

import uuid

import pytest
from aiormq import spec
from celery import Celery
from conveyor_api.publisher import MessageTemplate
from conveyor_core.jobs import JOB_TYPES
from kombu.serialization import dumps

ORIGIN = "conveyor-api@test-host"


@pytest.mark.parametrize("type_name", sorted(JOB_TYPES))
def test_a_templated_message_equals_the_one_celery_builds_for_the_same_job(type_name: str):
    protocol = Celery("conveyor-api", set_as_current=False)
    job_type = JOB_TYPES[type_name]
    template = MessageTemplate(protocol, job_type, ORIGIN)
    for _ in range(3):
        task_id = str(uuid.uuid4())
        expected = protocol.amqp.as_task_v2(
            task_id, job_type.task_name, args=(), kwargs={"job_id": task_id}, origin=ORIGIN
        )
        content_type, encoding, body = dumps(expected.body, serializer="json")
        assert template.headers(task_id) == expected.headers
        assert template.body(task_id) == body.encode()
        assert (template.content_type, template.content_encoding) == (content_type, encoding)
        assert task_id in template.headers(task_id)["kwargsrepr"]
        # The properties' pre-encoded bytes are what pamqp encodes for the same fields.
        properties = template.properties(task_id)
        assert properties.message_id == properties.correlation_id == task_id
        assert properties.delivery_mode == 2  # persistent
        encoded_by_pamqp = spec.Basic.Properties(
            content_type=content_type,
            content_encoding=encoding,
            headers=expected.headers,
            correlation_id=task_id,
            message_id=task_id,
            delivery_mode=2,
        ).marshal()
        assert properties.marshal() == encoded_by_pamqp
