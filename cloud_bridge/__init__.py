"""The link to the city brain (the card's ``cloud-bridge``), in two halves and what both share.

- shared: :mod:`cloud_bridge.link`, one MQTT connection driven from the event loop (paho-mqtt's
  socket callbacks; no extra thread), with a bounded in-flight window sized from the broker's
  receive maximum, MQTT 5 with a 3.1.1 fallback, TLS and client certificates;
  :mod:`cloud_bridge.session`, the reconnecting session around it that the bridge, the node
  source, the ingest and the live view share; :mod:`cloud_bridge.backoff`, capped and jittered
  exponential backoff; :mod:`cloud_bridge.aio`, the injected clock and ``open()`` for
  ``async with``.
- :mod:`cloud_bridge.uplink`, what a gateway runs: the durable outbox, the bridge (session,
  birth and death, sequence numbers) and the signed downlink commands.
- :mod:`cloud_bridge.citybrain`, the city brain's side: the ingest workers, the store (one file
  per database back end), the broker configuration and their commands.

Neither half imports the other, and nothing here imports ``edge``, ``sim`` or ``provisioning``
(import-linter contracts in ``pyproject.toml``).

Exception trees::

    LinkError               the connection failed or was lost; retry with backoff
    ├── LinkLost            it was up and went down; in-flight publishes are not acknowledged
    └── LinkRefused         the broker said no (credentials, client id, not authorised)

    OutboxError             the outbox cannot be opened or written (permissions, I/O error)
    ├── OutboxFull          the disk is full and no telemetry is left to drop; keep, retry later
    └── OutboxDamaged       SQLite found the file damaged while running; reopening sets it aside
"""
