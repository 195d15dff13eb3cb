"""The operator's page, served by the ingest (``cityedge ingest --operator-listen ...``).

What the city brain's operator watches: every gateway (online or offline, last seen, session,
the outbox depth and drops its birth reported), open alarms with severity and age and their
history, dead letters with their reasons, sequence gaps per gateway session with what is known
of why, and a time series of any device's point. Sign-in before anything; read-only; updates
pushed with Server-Sent Events; Chinese and English labels; plain HTML/JS/CSS shipped as package
data (no framework, nothing fetched at run time).

- :mod:`.auth`    accounts file (scrypt), failed sign-ins limited, sessions;
- :mod:`.feed`    which sections changed, for the open pages;
- :mod:`.app`     routes, the JSON API, the event stream, CSRF and security headers;
- :mod:`.server`  where it may listen (loopback or TLS), start and stop beside the ingest.

The queries live with the stores: :mod:`cloud_bridge.citybrain.store.operator_common`.
"""
