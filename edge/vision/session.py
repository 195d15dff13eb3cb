"""ONNX Runtime sessions: one model, one thread by default, warmed at start.

On a 2-core gateway one intra-op thread per session is the steadier default: several models and
the event loop share the cores, and a session that grabs both makes every other stage wait.
:meth:`ModelSession.warm` runs one inference on zeros shaped like the manifest's input spec, so
the first real frame does not pay for memory planning and kernel selection.

Sessions are not shared between threads here: each app runs its models from its own single
worker thread, so one session sees one call at a time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence

import numpy as np
import onnxruntime as ort

from edge.vision.manifest import ModelEntry, ModelError, ModelStore

log = logging.getLogger(__name__)


def limit_blas_threads(threads: int = 1) -> None:
    """Cap numpy's BLAS pool (process-wide) so it does not fight the model threads.

    On a busy 2-core gateway a multi-threaded matrix-vector product (the 1:N face search) waits
    for a second core that ONNX Runtime or another process holds: one thread measured 2 ms
    where two took 8 ms (docs/benchmarks.md). Called by apps that use numpy heavily.
    """
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=threads, user_api="blas")


class ModelSession:
    """One ONNX model from a :class:`ModelStore`, checked against its manifest entry."""

    def __init__(self, store: ModelStore, name: str, *, threads: int = 1) -> None:
        self.entry: ModelEntry = store.entry(name)
        path = store.path(name)  # refuses a file whose sha256 differs from the manifest
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(
                str(path), sess_options=opts, providers=["CPUExecutionProvider"]
            )
        except Exception as err:  # onnxruntime raises its own untyped errors for bad files
            raise ModelError(
                f"model {name}: ONNX Runtime cannot load {path}: {err}", hint="run 'make models'"
            ) from err
        self.input_name = self._session.get_inputs()[0].name
        if self.input_name != self.entry.input.name:
            raise ModelError(
                f"model {name}: the file's input is {self.input_name!r}, "
                f"the manifest says {self.entry.input.name!r}",
                hint="fix models/manifest.yaml",
            )
        self.output_names = [o.name for o in self._session.get_outputs()]
        self.warm_ms: float | None = None

    @property
    def name(self) -> str:
        return self.entry.name

    @property
    def identity(self) -> str:
        return self.entry.identity

    def warm(self, shape: Sequence[int] | None = None) -> float:
        """Run once on zeros; dynamic dimensions become 1 (or come from ``shape``)."""
        spec = self.entry.input
        dims = list(shape) if shape is not None else [d if d is not None else 1 for d in spec.shape]
        if shape is None and spec.layout == "NHWC" and len(dims) == 4 and spec.shape[1] is None:
            dims[1] = dims[2] = 48  # a fully convolutional net needs a plausible image
        t0 = time.perf_counter()
        self.run(np.zeros(dims, dtype=np.dtype(spec.dtype)))
        self.warm_ms = (time.perf_counter() - t0) * 1000
        log.debug("model %s warmed in %.1f ms", self.identity, self.warm_ms)
        return self.warm_ms

    def run(self, x: np.ndarray, extra: Mapping[str, np.ndarray] | None = None) -> list[np.ndarray]:
        feeds = {self.input_name: x, **(extra or {})}
        outputs: list[np.ndarray] = self._session.run(self.output_names, feeds)
        return outputs
