"""Vision on the gateway: model manifest, ONNX Runtime sessions, frames and the camera source.

Generic on purpose — face access (issue 7) and bin fill / hygiene vision (issue 9) share it:

- :mod:`edge.vision.manifest`  what a model is (file, sha256, provenance, input spec, labels) and
  :class:`~edge.vision.manifest.ModelStore`, which finds built models and refuses a file whose
  checksum differs from the manifest;
- :mod:`edge.vision.session`   :class:`~edge.vision.session.ModelSession`, one ONNX Runtime
  session (one thread by default), warmed at start;
- :mod:`edge.vision.frames`    :class:`~edge.vision.frames.Frame`, the item a camera source emits;
- :mod:`edge.vision.motion`    motion gating (pure numpy) so static scenes cost no inference;
- :mod:`edge.camera.source`    source ``camera``: OpenCV file / RTSP / USB, read off the event loop;
- :mod:`edge.vision.imageops`  pure numpy geometry: similarity transforms, NMS, box helpers.

Heavy imports (onnxruntime, cv2) happen only in the modules that need them, so configuration
checks work without the ``vision`` extra.
"""
