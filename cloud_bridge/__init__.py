"""The link to the city brain.

- :mod:`cloud_bridge.link`  one MQTT connection driven from the event loop (paho-mqtt's socket
  callbacks; no extra thread), with a bounded in-flight window sized from the broker's
  receive maximum, MQTT 5 with a 3.1.1 fallback, TLS and client certificates.
- :mod:`cloud_bridge.outbox`  the durable SQLite outbox (budget, full disk, damaged files);
  :mod:`cloud_bridge.counters` the session and position counters that outlive it.

Exception trees::

    LinkError               the connection failed or was lost; retry with backoff
    ├── LinkLost            it was up and went down; in-flight publishes are not acknowledged
    └── LinkRefused         the broker said no (credentials, client id, not authorised)

    OutboxError             the outbox cannot be opened or written (permissions, I/O error)
    ├── OutboxFull          the disk is full and no telemetry is left to drop; keep, retry later
    └── OutboxDamaged       SQLite found the file damaged while running; reopening sets it aside
"""
