"""Device simulators for tests, demos and benchmarks (``cityedge simulate ...``)."""
