"""The blog pattern this project replaces, written from its description, as the bench's
baseline. Not part of the product: it exists to be measured and beaten.

Sync FastAPI endpoints (so each request takes a threadpool thread) that call Celery's
`.delay()` and read results through the `rpc://` backend (the bench's peer, "Celery + DB
results": through the SQLAlchemy backend that `BASELINE_RESULT_BACKEND` names, see tasks/).

    uvicorn main:app            # the API
    celery -A tasks worker      # the documented worker command: registers no task (see tasks/)
"""

from typing import Annotated

from celery.result import AsyncResult
from fastapi import Body, FastAPI
from tasks import app as celery_app
from tasks.commands import execute_command
from tasks.data import transform_data
from tasks.ml import train_model

app = FastAPI(title="blog pattern (baseline)")

SAMPLE = [{"value": 10}, {"value": 20}, {"value": 30}]


@app.post("/train")
def train():
    task = train_model.delay()
    return {"task_id": task.id}


@app.post("/execute")
def execute(command: str):
    task = execute_command.delay(command)
    return {"task_id": task.id}


@app.post("/transform")
def transform(rows: Annotated[list[dict] | None, Body()] = None):
    task = transform_data.delay(rows or SAMPLE)
    return {"task_id": task.id}


@app.get("/status/{task_id}")
def status(task_id: str):
    return {"status": AsyncResult(task_id, app=celery_app).status}


@app.get("/result/{task_id}")
def result(task_id: str):
    return {"result": AsyncResult(task_id, app=celery_app).result}
