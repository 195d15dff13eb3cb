"""The gateway: config, supervisor, sources, apps, sinks, the local HTTP endpoint, simulators
and the ``cityedge`` CLI.

Exception tree (``edge.errors``)::

    EdgeError                       every error the gateway raises on purpose; has code and hint
    ├── ConfigError                 the site file is wrong (carries one message per problem)
    ├── MissingExtraError           a plug-in needs an optional dependency that is not installed
    ├── PermanentError              retrying will not help (bad point map, refused credentials)
    └── TransientError              may go away by itself (timeout, connection refused)
        └── DeviceError             a field device failed to answer or answered with an exception
"""
