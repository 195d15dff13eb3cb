"""The gateway's shared vision runtime: model manifest, ONNX Runtime sessions, frames, motion
gating, tracking, the face detector (the camera source is the ``camera`` plug-in).

Generic on purpose — face access (issue 7) and bin fill / hygiene vision (issue 9) share it:

- :mod:`edge.vision.manifest`  what a model is (file, sha256, provenance, input spec, labels) and
  :class:`~edge.vision.manifest.ModelStore`, which finds built models and refuses a file whose
  checksum differs from the manifest;
- :mod:`edge.vision.session`   :class:`~edge.vision.session.ModelSession`, one ONNX Runtime
  session (one thread by default), warmed at start;
- :mod:`edge.vision.frames`    :class:`~edge.vision.frames.Frame`, the item a camera source emits;
- :mod:`edge.vision.motion`    motion gating (pure numpy) so static scenes cost no inference;
- :mod:`edge.vision.face_detector`  MTCNN over ONNX Runtime (face access and hygiene use it);
- :mod:`edge.vision.imageops`  pure numpy geometry: similarity transforms, NMS, box helpers.

Heavy imports (onnxruntime, cv2) happen only in the modules that need them, so configuration
checks work without the ``vision`` extra.
"""
