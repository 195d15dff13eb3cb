"""``python -m bench [NAME ...]``: run benchmarks and record them in docs/benchmarks.md."""

from __future__ import annotations

import importlib
import signal
import sys

from rich.console import Console

# name -> module with ``run() -> str`` (a markdown section); add new benchmarks here.
BENCHMARKS = {
    "e2e": "bench.e2e",
    "faces": "bench.faces",
    "liveness": "bench.liveness",
    "nodes": "bench.nodes",
    "fieldbus": "bench.fieldbus",
    "traffic": "bench.traffic",
    "bridge": "bench.bridge",
    "waste_food": "bench.waste_food",
    "citybrain": "bench.citybrain",
}


def main(argv: list[str]) -> int:
    # SIGTERM unwinds like Ctrl-C, so each benchmark's finally stops the processes it started
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    console = Console()
    names = argv or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        console.print(f"unknown benchmark {unknown}; known: {', '.join(BENCHMARKS)}")
        return 2
    from bench.common import note_load, write_section

    for name in names:
        console.rule(f"benchmark {name}")
        note_load()
        module = importlib.import_module(BENCHMARKS[name])
        body: str = module.run(console)
        write_section(name, body)
        console.print(body, highlight=False, markup=False)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
