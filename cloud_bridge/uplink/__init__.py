"""The gateway's side of the link to the city brain (the ``mqtt`` sink runs it).

- :mod:`.bridge`    the outbox, the MQTT session and the downlink commands run as one unit;
- :mod:`.outbox`    the durable SQLite outbox (budget, full disk, damaged files);
  :mod:`.counters`  the session and position counters that outlive it;
- :mod:`.commands`  signed downlink commands: check, carry out, answer, record.

Imports :mod:`protocols` and the shared part of :mod:`cloud_bridge`, never
:mod:`cloud_bridge.citybrain`.
"""
