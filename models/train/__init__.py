"""Training of the models we make ourselves (``convert: train`` in ``models/manifest.yaml``).

- :mod:`models.train.recipes`  data, schedule and metrics per recipe (``bin-fill``,
  ``hair-cover``), :func:`~models.train.recipes.train` and
  :func:`~models.train.recipes.evaluate`;
- :mod:`models.train.nets`     the small CNN and its hand-written, byte-reproducible ONNX export;
- :mod:`models.train.faces`    the real faces of the registry photos, committed as data.

The trained files are committed (``models/trained/``); ``make retrain`` (:mod:`models.retrain`)
is what runs these recipes.
"""
