"""The gateway runtime: a core (gateway, supervisor, channels, clock, the plug-in contract and
registry, readings, metrics, the local HTTP endpoint, actuators), config, the shared vision
runtime, device profiles, the gateway's commands (:mod:`edge.cli`), and one package per plug-in
holding its config model, implementation and domain code (``modbus``, ``coap``, ``node_mqtt``,
``camera``, ``thresholds``, ``environment``, ``face_access``, ``bin_fill``, ``hygiene``,
``traffic_signal``, ``mqtt_sink``, ``hj212_sink``). Simulators, scenes and the demo are in
:mod:`sim`.

One exception tree (roots in ``edge.errors``; the plug-ins' own errors where they live; codes
and exit codes registered in :mod:`protocols.codes`)::

    EdgeError                       every error the gateway raises on purpose; has code and hint
    ├── ConfigError        CE100    the site file is wrong (carries one message per problem)
    ├── MissingExtraError  CE101    a plug-in needs an optional dependency that is not installed
    ├── PermanentError     CE200    retrying will not help (bad point map, refused credentials):
    │   │                           the supervisor stops the plug-in for good
    │   ├── ActuationError CE210    a write refused: unknown device or point, read-only (actuators)
    │   ├── CommandKeyError CE200   the gateway's node command key or its delegation is unusable
    │   │                           (node_mqtt)
    │   ├── ModelError     CE400    a model missing or not the one pinned (vision.manifest)
    │   └── FaceStoreError CE420, EnrollmentError and BadPhoto CE421 (face_access)
    └── TransientError     CE300    may go away by itself (timeout, connection refused): the
        │                           supervisor starts the plug-in again with backoff
        ├── DeviceError    CE310    a field device failed to answer or answered with an exception
        │   ├── NoReply CE311, BusDown CE312 (modbus)
        │   └── NodeNoReply CE310   a node did not answer a command or report it back (node_mqtt)
        ├── CameraError    CE410    a camera or video cannot be opened or read (camera)
        └── PlatformLost   CE300    the HJ 212 platform's connection broke (hj212_sink)

Two exceptions are signals, not errors, and stay outside the tree on purpose:
``edge.channel.ChannelClosed`` (a channel's end, as ``StopAsyncIteration`` is an iterator's) and
``edge.config.yamlsrc.TooLarge`` (a YAML loader error by type, so the loader reports its line;
it becomes a :class:`~edge.errors.ConfigError` problem). What :mod:`cloud_bridge` raises is that
package's tree.
"""
