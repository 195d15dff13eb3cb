"""Pure, sans-IO codecs and contracts shared by the gateway, the cloud bridge and provisioning.

Nothing in this package opens a socket, a serial port or an event loop. Modules:

- ``ids``       time-ordered unique ids (UUIDv7, RFC 9562)
- ``envelope``  the event envelope every message to the city brain travels in
- ``topics``    the MQTT topic tree
- ``modbus``    Modbus points as data, value decoding/encoding and the read planner
- ``signed``    signed envelopes (commands, config, OTA); ``ed25519`` the key and signature
                checks OpenSSL does not make; ``boundedjson`` JSON parsed within limits

Exception tree::

    ProtocolError                 the data broke a rule of the contract
    ├── DecodeError               bytes/registers that cannot be a value of that type
    ├── EncodeError               a value that cannot be put in that type (range, NaN for ints)
    └── TopicError                a topic or an id that is not in the tree

    HintedError                   code + message + hint for people: the base of the gateway's
                                  EdgeError and the technician tool's ProvisionError trees
"""
