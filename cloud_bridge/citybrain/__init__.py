"""The city brain's side: what receives the gateways' envelopes and talks to them.

- :mod:`.ingest`      ``cityedge ingest``: subscribe, validate, dedupe, store, acknowledge;
- :mod:`.store`       where the ingest keeps what it received: SQLite (the embedded default) or
  PostgreSQL, one file per back end;
- :mod:`.brokerconf`  a site's mosquitto configuration (TLS, client certificates, ACL);
- :mod:`.cli`         ``cityedge ingest``, ``broker-config``, ``command-key`` and ``command``.

Imports :mod:`protocols` and the shared part of :mod:`cloud_bridge`, never
:mod:`cloud_bridge.uplink`.
"""
