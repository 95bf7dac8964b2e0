"""`transform_data`: a Python loop over a list of dicts, doubling each `value`."""

from tasks import app


@app.task
def transform_data(rows):
    return [row["value"] * 2 for row in rows]
