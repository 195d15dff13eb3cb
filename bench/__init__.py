"""Benchmarks (``make bench``). Each writes its own section of docs/benchmarks.md, stamped with
the machine and the date, so one can be re-run without touching the others."""
