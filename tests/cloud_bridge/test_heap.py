"""settle_heap: the start-up heap frozen, the young threshold raised, cycles still collected.

Each case runs in a Python of its own: freezing pytest's own heap would change every test after
it."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from cloud_bridge.heap import YOUNG_THRESHOLD, settle_heap


def run_py(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
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
        import gc
        from cloud_bridge.heap import settle_heap, YOUNG_THRESHOLD
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
        import gc, weakref
        from cloud_bridge.heap import settle_heap, YOUNG_THRESHOLD
        settle_heap()
        class Node:
            pass
        a, b = Node(), Node()
        a.other, b.other = b, a
        gone = weakref.ref(a)
        del a, b
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
        import gc, weakref
        from cloud_bridge.heap import settle_heap
        class Stage:
            pass
        a, b = Stage(), Stage()
        a.other, b.other = b, a
        old = weakref.ref(a)
        del a, b
        settle_heap()  # collects it before freezing: garbage already
        assert old() is None
        c, d = Stage(), Stage()
        c.other, d.other = d, c
        stage = weakref.ref(c)
        settle_heap()  # still in use: frozen with the rest
        del c, d  # the restart replaces it
        gc.collect()
        assert stage() is not None, "frozen objects are not collected"
        settle_heap()
        print("collected" if stage() is None else "kept")
        """
    )
    assert out == "collected"


@pytest.mark.parametrize("bad", [0, -1])
def test_a_threshold_that_would_turn_the_collector_off_is_refused(bad: int) -> None:
    with pytest.raises(ValueError, match="turns the collector off"):
        settle_heap(bad)
    assert YOUNG_THRESHOLD >= 1000
