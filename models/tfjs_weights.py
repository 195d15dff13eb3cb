"""TensorFlow.js weight shards → named numpy arrays (shared by the tfjs converters).

A tfjs weights manifest is a list of groups; each group lists weights (name, shape, dtype and an
optional ``quantization``) whose bytes follow each other in the group's shards, and groups follow
each other. Supported encodings:

- raw ``float32`` and ``int32`` (little-endian);
- ``uint8`` / ``uint16`` affine quantisation: ``q * scale + min``;
- ``float16`` quantisation (``{"dtype": "float16"}``), widened to float32.

Anything else, and bytes left over after the last weight, stop the conversion.
"""

from __future__ import annotations

from typing import Any

import numpy as np

_RAW = {"float32": "<f4", "int32": "<i4"}
_QUANT = {"uint8": "<u1", "uint16": "<u2", "float16": "<f2"}


def decode_weights(groups: list[dict[str, Any]], data: bytes, where: str) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    offset = 0
    for group in groups:
        for w in group["weights"]:
            shape = tuple(int(d) for d in w["shape"])
            count = int(np.prod(shape)) if shape else 1
            quant = w.get("quantization")
            if quant is None:
                dtype = _RAW.get(w["dtype"])
                if dtype is None:
                    raise ValueError(f"{where}: {w['name']}: unsupported dtype {w['dtype']}")
                raw = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
                values = raw.astype(np.float32 if w["dtype"] == "float32" else np.int32)
            else:
                dtype = _QUANT.get(quant["dtype"])
                if dtype is None:
                    raise ValueError(f"{where}: {w['name']}: unsupported quantisation {quant}")
                raw = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
                if quant["dtype"] == "float16":
                    values = raw.astype(np.float32)
                else:
                    values = raw.astype(np.float32) * np.float32(quant["scale"]) + np.float32(
                        quant["min"]
                    )
            offset += raw.nbytes
            out[w["name"]] = values.reshape(shape)
    if offset != len(data):
        raise ValueError(f"{where}: {len(data) - offset} bytes left after the last weight")
    return out
