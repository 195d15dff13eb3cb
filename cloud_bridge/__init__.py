"""The link to the city brain.

- :mod:`cloud_bridge.link`  one MQTT connection driven from the event loop (paho-mqtt's socket
  callbacks; no extra thread), with a bounded in-flight window sized from the broker's
  receive maximum, MQTT 5 with a 3.1.1 fallback, TLS and client certificates.

Exception tree::

    LinkError               the connection failed or was lost; retry with backoff
    ├── LinkLost            it was up and went down; in-flight publishes are not acknowledged
    └── LinkRefused         the broker said no (credentials, client id, not authorised)
"""
