"""Python's cyclic garbage collector, set for a long-running service (the gateway, the ingest).

With CPython's defaults the collector looks at the young objects after every 700 more container
objects were made than freed, and now and then at every object of the process. A gateway polling
500 Modbus devices flat out makes and frees tens of thousands of short-lived containers a second
(replies, readings, futures, coroutine frames), and its heap holds hundreds of thousands of
objects made at start-up (modules, classes, the config, the profiles) that never become garbage.
Counted with ``gc.callbacks`` on the field-bus benchmark's 500-device setup (``bench/fieldbus.py``):
150-180 young collections a second, 14-16 middle ones and 1.2-1.6 full ones of 80-100 ms each: a
quarter of the process's CPU time, and a pause of a tenth of a second in the polling at every
full one.

:func:`settle_heap`, called once start-up is done:

- collects what start-up left behind, then **freezes** what remains (``gc.freeze()``): those
  objects stay where they are and are never looked at again by any collection. Objects made
  later are collected as before; a frozen one is still freed by its reference count.
- raises the young generation's threshold to :data:`YOUNG_THRESHOLD`: the collector still runs,
  and cyclic garbage is still found, only after 50,000 more containers rather than 700. Most
  short-lived objects are freed by their reference count before then, so far fewer survive into
  the older generations, and the full collections that followed them become rare.

The service calls it again before each restart of its stages (a configuration applied in place):
the previous freeze is undone first, so the objects of the stages it replaced can be collected.
``gc.freeze`` came with Python 3.7 for servers with a large start-up heap. At 500 devices (one
run each): 9.7 ms of the gateway's CPU per 1,000 points with the defaults, 8.4 with the freeze
alone, 7.4 with the threshold alone, 7.3 with both.
"""

from __future__ import annotations

import gc
from typing import Final

#: container objects made (net of those freed) between two collections of the young generation
YOUNG_THRESHOLD: Final = 50_000


def settle_heap(young_threshold: int = YOUNG_THRESHOLD) -> int:
    """Start-up is done: collect its garbage, freeze what is left and raise the young
    generation's threshold (see the module docstring). Returns how many objects are frozen."""
    if young_threshold < 1:
        raise ValueError(
            f"young_threshold {young_threshold}: a threshold below 1 turns the collector off; "
            "use at least 1"
        )
    gc.unfreeze()  # a restart: what the previous stages left may be garbage now
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(young_threshold, middle, old)
    return gc.get_freeze_count()
