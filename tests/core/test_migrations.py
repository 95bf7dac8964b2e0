"""The migrations build exactly the schema the models declare (SQLite and PostgreSQL)."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from conveyor_core.store.engine import make_sync_engine
from conveyor_core.store.models import Base


def test_upgrading_to_head_leaves_nothing_for_autogenerate_to_add(database_url: str):
    engine = make_sync_engine(database_url)  # the fixture upgraded it to head
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    engine.dispose()
    assert differences == []
