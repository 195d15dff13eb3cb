"""The gateway runtime: a core (gateway, supervisor, channels, clock, the plug-in contract and
registry, readings, metrics, the local HTTP endpoint, actuators), config, the shared vision
runtime, device profiles, the gateway's commands (:mod:`edge.cli`), and one package per plug-in
holding its config model, implementation and domain code (``modbus``, ``coap``, ``node_mqtt``,
``camera``, ``thresholds``, ``environment``, ``face_access``, ``bin_fill``, ``hygiene``,
``traffic_signal``, ``mqtt_sink``, ``hj212_sink``). Simulators, scenes and the demo are in
:mod:`sim`.

Exception tree (``edge.errors``)::

    EdgeError                       every error the gateway raises on purpose; has code and hint
    ├── ConfigError                 the site file is wrong (carries one message per problem)
    ├── MissingExtraError           a plug-in needs an optional dependency that is not installed
    ├── PermanentError              retrying will not help (bad point map, refused credentials)
    └── TransientError              may go away by itself (timeout, connection refused)
        └── DeviceError             a field device failed to answer or answered with an exception
"""
