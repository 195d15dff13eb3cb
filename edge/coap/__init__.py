"""Source ``coap``: CoAP sensors polled by GET or followed with Observe (SenML, JSON, text).

:mod:`.config` (importable without the ``coap`` extra) and :mod:`.source`."""
