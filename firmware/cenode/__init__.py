"""cityedge sensor-node firmware (MicroPython; the same modules run on CPython for tests)."""
