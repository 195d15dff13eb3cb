"""Source ``camera``: frames from a file, RTSP or USB camera via OpenCV, motion-gated.

:mod:`.config` (importable without the ``vision`` extra) and :mod:`.source`."""
