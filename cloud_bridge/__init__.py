"""The link to the city brain (the card's ``cloud-bridge``), in two halves and what both share.

- shared: :mod:`cloud_bridge.link`, one MQTT connection driven from the event loop (an
  ``asyncio.Protocol`` over :mod:`protocols.mqtt_wire`; no extra thread), with a bounded
  in-flight window sized from the broker's receive maximum, MQTT 5 with a 3.1.1 fallback, TLS
  and client certificates;
  :mod:`cloud_bridge.session`, the reconnecting session around it that the bridge, the node
  source, the ingest and the live view share; :mod:`cloud_bridge.backoff`, capped and jittered
  exponential backoff; :mod:`cloud_bridge.aio`, the injected clock and ``open()`` for
  ``async with``;
  :mod:`cloud_bridge.errors`, the roots of the exception tree below.
- :mod:`cloud_bridge.uplink`, what a gateway runs: the durable outbox, the bridge (session,
  birth and death, sequence numbers) and the signed downlink commands.
- :mod:`cloud_bridge.citybrain`, the city brain's side: the ingest workers, the store (one file
  per database back end), the broker configuration and their commands.

Neither half imports the other, and nothing here imports ``edge``, ``sim`` or ``provisioning``
(import-linter contracts in ``pyproject.toml``).

One exception tree (:mod:`cloud_bridge.errors`; transient and permanent errors are different
types; where each class lives in brackets)::

    BridgeError                     every error cloud_bridge raises on purpose
    ├── TransientBridgeError        may clear by itself: keep what you hold, try again with backoff
    │   ├── LinkError               the connection failed or was lost            [link]
    │   │   ├── LinkLost            it was up and went down; in-flight publishes are not acknowledged
    │   │   └── LinkRefused         the broker said no (credentials, client id, not authorised);
    │   │                           tried again, as the broker's ACL is fixed on the broker
    │   ├── OutboxError             the outbox cannot be opened or written        [uplink.outbox]
    │   │   ├── OutboxFull          the disk is full and no telemetry is left to drop; keep, retry
    │   │   └── OutboxDamaged       SQLite found the file damaged; opening it again sets it aside
    │   └── StoreError              the ingest's database cannot be reached or written; the batch
    │                               is not acknowledged and is written again  [citybrain.store]
    └── PermanentBridgeError        the same again fails again
        ├── CommandError            a handler refuses a downlink command: the reply says why
        │                           (``bad-args`` or ``failed``)              [uplink.commands]
        └── AccountError            the operator accounts file or an account cannot be used
                                    (also a HintedError, CE002)      [citybrain.operator.auth]

Commands turn them into coded errors for people (:mod:`protocols.codes`: ``CE600`` the store,
``CE610`` the broker, ``CE620``/``CE621`` a command).
"""
