"""The vision models: the manifest, the build that fetches, converts and verifies them
(:mod:`models.build`, ``make models``), our own trained models and their recipes
(:mod:`models.retrain`, :mod:`models.train`), the converters and the model cards.

One exception tree (:mod:`models.errors`; codes and exit codes from :mod:`protocols.codes`)::

    BuildError              CE700  the build stopped: a manifest or recipe problem      (exit 1)
    ├── ChecksumMismatch    CE701  a file differs from the checksum the manifest pins   (exit 1)
    ├── FetchError          CE702  a registry package cannot be fetched                 (exit 3)
    └── UnsupportedModel    CE700  a converter met what it does not convert (a ValueError)
        ├── keras_h5.UnsupportedLayer
        ├── tfjs_graph.UnsupportedOp
        └── tflite_onnx.UnsupportedOp
"""
