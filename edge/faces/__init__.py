"""Face access control: the face pipeline, the encrypted template store, the audit log.

::

    frame ─▶ detect (MTCNN) ─▶ quality (size, blur, pose) ─▶ align (5 points → 150x150 chip)
          ─▶ liveness (FaceAntiSpoofing) ─▶ embed (dlib ResNet, 128-d) ─▶ 1:N match (gallery)
          ─▶ decision ─▶ gate relay (actuator path) + access event + audit entry

- :mod:`edge.faces.detector`  MTCNN over ONNX Runtime, numpy post-processing;
- :mod:`edge.faces.pipeline`  quality checks, alignment, liveness, embedding;
- :mod:`edge.faces.gallery`   1:N nearest-neighbour search over the enrolled templates;
- :mod:`edge.faces.store`     templates encrypted at rest (AES-GCM), erasure, re-enrolment;
- :mod:`edge.faces.audit`     the tamper-evident, hash-chained audit log and its verifier;
- :mod:`edge.faces.web`       the gate screen, the enrolment page and the local HTTP API;
- :mod:`edge.faces.cli`       ``cityedge faces enroll|list|delete|reenroll|audit-verify``.

Errors (all :class:`~edge.errors.EdgeError`)::

    PermanentError ─┬─ ModelError (CE400)        model missing or checksum differs
                    ├─ FaceStoreError (CE420)    store unreadable: wrong key, tampered row
                    └─ EnrollmentError (CE421)   no face, several faces, poor quality, bad id
"""
