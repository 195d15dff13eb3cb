"""settle_heap: the start-up heap frozen, the young threshold raised, cycles still collected.

Each case runs in a Python of its own: freezing pytest's own heap would change every test after
it."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from cloud_bridge.heap import YOUNG_THRESHOLD, settle_heap

#: given to every case: ``cycle()`` makes two objects that refer to each other (garbage only
#: the collector can free once nothing else refers to them) and returns a weak reference to one
PRELUDE = """
import gc, weakref
from cloud_bridge.heap import settle_heap, YOUNG_THRESHOLD

class Node:
    pass

def cycle():
    a, b = Node(), Node()
    a.other, b.other = b, a
    return weakref.ref(a)
"""


def run_py(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", PRELUDE + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_start_up_objects_are_frozen_and_the_young_threshold_raised() -> None:
    out = run_py(
        """
        _, middle, old = gc.get_threshold()
        before = [["start-up"]]  # lists are always tracked
        frozen = settle_heap()
        after = [["later"]]
        ids = {id(o) for o in gc.get_objects()}
        assert frozen == gc.get_freeze_count() > 1000, frozen
        assert id(before) not in ids, "a start-up object is still looked at"
        assert id(after) in ids, "an object made later is not looked at"
        assert gc.get_threshold() == (YOUNG_THRESHOLD, middle, old), gc.get_threshold()
        assert gc.isenabled()
        print("ok")
        """
    )
    assert out == "ok"


def test_cycles_made_later_are_still_collected_without_asking() -> None:
    """The collector still runs by itself: garbage cycles made after start-up go once enough
    containers were made (no gc.collect() here)."""
    out = run_py(
        """
        settle_heap()
        gone = cycle()
        assert gone() is not None  # a cycle: its reference counts never reach zero
        keep = [[i] for i in range(3 * YOUNG_THRESHOLD)]  # containers made, none freed
        print("collected" if gone() is None else "still there")
        """
    )
    assert out == "collected"


def test_a_restart_lets_the_replaced_stages_objects_be_collected() -> None:
    """Called again before a restart: what the first call froze and has become garbage since
    (the stages a configuration replaced) is collected, not kept frozen for ever."""
    out = run_py(
        """
        old = cycle()
        settle_heap()  # collects it before freezing: garbage already
        assert old() is None
        part = cycle()
        stage = [part()]  # the running stages keep it in use
        settle_heap()  # frozen with the rest
        del stage  # the restart replaces the stages: now it is garbage
        gc.collect()
        assert part() is not None, "a frozen object was collected"
        settle_heap()
        print("collected" if part() is None else "kept")
        """
    )
    assert out == "collected"


@pytest.mark.parametrize("bad", [0, -1])
def test_a_threshold_that_would_turn_the_collector_off_is_refused(bad: int) -> None:
    with pytest.raises(ValueError, match="turns the collector off"):
        settle_heap(bad)
    assert YOUNG_THRESHOLD >= 1000
