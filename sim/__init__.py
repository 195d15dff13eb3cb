"""What stands in for the world: field-device simulators, the junction simulator, the procedural
scenes that train and demo the vision apps, the local-site launcher, the live view and the demo.

Never part of a gateway's install (``scripts/install-gateway.sh`` leaves it out): it may import
every room, and only tools import it (the umbrella CLI lazily, ``models``, ``bench``, tests).

- :mod:`sim.devices`   Modbus devices, the CoAP air sensor, the HJ 212 platform, fault schedules;
- :mod:`sim.junction`  a signal cabinet on Modbus driven by SUMO;
- :mod:`sim.scenes`    procedural scenes and videos (bins, a food factory, faces at a gate);
- :mod:`sim.localsite` starts brokers, PostgreSQL, simulators and gateways on free ports;
- :mod:`sim.liveview`  what the city brain receives, live; :mod:`sim.demo` ``cityedge demo``;
- :mod:`sim.cli`       ``cityedge simulate ...`` and ``cityedge demo``.

Errors: one class of its own, ``sim.junction.cabinet.CommandRefused`` (a ``ValueError``: the
simulated cabinet refuses a command's values and answers Modbus exception 3). A program the
launcher starts that does not come up raises ``OSError``, ``RuntimeError`` or ``TimeoutError``
with its last log lines; the commands turn that into ``CE007`` (:mod:`protocols.codes`) through
:mod:`cityedge.console`, as they do every error for people.
"""
