"""App ``face_access``: the face pipeline, the encrypted template store, the audit log.

:mod:`.config` (importable without the ``vision`` extra) and :mod:`.app`; the detector is the
shared vision runtime's (:mod:`edge.vision.face_detector`, hygiene uses it too).

::

    frame ─▶ detect (MTCNN) ─▶ quality (size, blur, pose) ─▶ align (5 points → 150x150 chip)
          ─▶ liveness (FaceAntiSpoofing) ─▶ embed (dlib ResNet, 128-d) ─▶ 1:N match (gallery)
          ─▶ decision ─▶ gate relay (actuator path) + access event + audit entry

- :mod:`edge.face_access.pipeline`  quality checks, alignment, liveness, embedding;
- :mod:`edge.face_access.gallery`   1:N nearest-neighbour search over the enrolled templates;
- :mod:`edge.face_access.store`     templates encrypted at rest (AES-GCM), erasure, re-enrolment;
- :mod:`edge.face_access.audit`     the tamper-evident, hash-chained audit log and its verifier;
- :mod:`edge.face_access.web`       the gate screen, the enrolment page and the local HTTP API;
- :mod:`edge.face_access.cli`       ``cityedge faces enroll|list|delete|reenroll|audit-verify``.

Errors (all :class:`~edge.errors.EdgeError`)::

    PermanentError ─┬─ ModelError (CE400)        model missing or checksum differs
                    ├─ FaceStoreError (CE420)    store unreadable: wrong key, tampered row
                    ├─ EnrollmentError (CE421)   no face, several faces, poor quality, bad id
                    └─ BadPhoto (CE421)          a photo refused before decoding (size, format)
"""
