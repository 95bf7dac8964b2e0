"""The gateway freezes what startup created, so full collections skip it (main.py)."""

from __future__ import annotations

import gc
import weakref

from conveyor_api.main import freeze_startup_objects


class Node:
    partner: Node | None = None


def test_startup_objects_are_frozen_after_garbage_is_collected():
    cycle = Node()
    cycle.partner = cycle  # only the cyclic collector frees this
    collected = weakref.ref(cycle)
    kept = Node()
    del cycle
    gc.disable()  # no automatic collection in between: the freeze must collect it itself
    try:
        freeze_startup_objects()
        assert collected() is None, "garbage was frozen instead of collected"
        assert gc.get_freeze_count() > 0
        assert kept not in gc.get_objects(generation=2)  # frozen objects are in no generation
    finally:
        gc.unfreeze()
        gc.enable()
