"""The end-to-end benchmark's warm-up ends when two windows agree in rate and in latency."""

from __future__ import annotations

import pytest

from bench.e2e import Window


@pytest.mark.parametrize(
    ("before", "now", "steady"),
    [
        (None, Window(1000, 50.0), False),  # one window says nothing yet
        (Window(1000, 50.0), Window(1050, 52.0), True),
        (Window(1000, 50.0), Window(1400, 52.0), False),  # the rate still climbing
        (Window(1000, 50.0), Window(0, None), False),  # nothing arrived
        (Window(1000, None), Window(1000, 50.0), False),  # no latency sampled before
        (Window(1000, 50.0), Window(1000, 65.0), True),  # 15 ms apart: within 20 ms
        # a queue from the start still draining: the rate steady, the latency falling
        (Window(28000, 774.0), Window(27500, 527.0), False),
        (Window(28000, 265.0), Window(27500, 246.0), True),  # within 20 ms and 15 %
        (Window(28000, 1000.0), Window(27500, 900.0), True),  # 100 ms apart, but within 15 %
    ],
)
def test_steady_after(before: Window | None, now: Window, steady: bool) -> None:
    assert now.steady_after(before) is steady
