"""Signed over-the-air updates of the node's firmware folder (``app/``).

1. A manifest arrives on ``.../ota``: a signed envelope (purpose ``ota``) whose body is JSON
   ``{"version": "1.3.0", "size": n, "sha256": "<hex>", "format": "bundle"}``. Refused, with a
   reason reported in a status frame: unsigned, wrongly signed or unknown key (see
   :mod:`cenode.signed`), ``downgrade`` (not newer than what runs), ``too-big``, ``malformed``.
2. The image follows on ``.../ota/data`` in chunks (u32 offset + bytes), written to
   ``ota/image.bin`` while hashing; a chunk at the wrong offset is ignored (the sender repeats).
3. When ``size`` bytes are in: a sha256 that differs from the signed one is ``corrupt``; a bundle
   that does not unpack, has unsafe names or a VERSION that differs from the manifest's is
   ``corrupt`` too. Otherwise the new folder replaces ``app/`` (the old one stays as
   ``app.prev/``), ``ota.json`` marks it pending and the node restarts into it.
4. The new firmware calls :meth:`Ota.mark_healthy` after its first acknowledged report; a pending
   image that never does is rolled back by ``bootsel`` at a later boot.

Bundle format: b"CEB1", then per file: u16 name length, name (ASCII, relative, no ".."),
u32 size, bytes; nothing after the last file.
"""

import hashlib
import json
import os
import struct

import bootsel
from cenode import signed
from cenode.util import hexlify, makedirs, rmtree
from cenode.wire import parse_version

BUNDLE_MAGIC = b"CEB1"


class OtaRefused(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(reason + ": " + message)
        self.reason = reason


def current_version(root: str) -> tuple:
    return bootsel.version(root)


def _safe_name(name: str) -> bool:
    if not name or name[0] == "/" or len(name) > 96:
        return False
    for part in name.split("/"):
        if part in ("", ".", ".."):
            return False
    for c in name:
        if not (c.isalpha() or c.isdigit() or c in "_-./") or ord(c) > 127:
            return False
    return True


def unpack_bundle(path: str, into: str) -> list:
    """Write the files of the bundle at ``path`` below ``into``; OtaRefused("corrupt") if bad."""
    names = []
    with open(path, "rb") as f:
        if f.read(4) != BUNDLE_MAGIC:
            raise OtaRefused("corrupt", "not a firmware bundle")
        while True:
            head = f.read(2)
            if not head:
                return names
            if len(head) != 2:
                raise OtaRefused("corrupt", "bundle ends inside a file header")
            n = struct.unpack(">H", head)[0]
            name = f.read(n).decode()
            size_bytes = f.read(4)
            if len(size_bytes) != 4 or not _safe_name(name):
                raise OtaRefused("corrupt", "bad file entry in the bundle")
            size = struct.unpack(">I", size_bytes)[0]
            target = into + "/" + name
            if "/" in name:
                makedirs(target[: target.rfind("/")])
            with open(target, "wb") as out:
                left = size
                while left:
                    chunk = f.read(min(left, 512))
                    if not chunk:
                        raise OtaRefused("corrupt", "bundle ends inside " + name)
                    out.write(chunk)
                    left -= len(chunk)
            names.append(name)


class Ota:
    def __init__(self, root: str, keys: dict, max_size: int = 512 * 1024) -> None:
        self.root = root
        self.keys = keys
        self.max_size = max_size
        self.expect: dict | None = None
        self.received = 0
        self.hasher = None
        self.nonces = signed.Nonces(4)

    @property
    def version(self) -> tuple:
        return current_version(self.root)

    def offer(self, manifest: bytes, now: int | None) -> tuple:
        """Check a manifest; returns the new version and prepares to receive the image."""
        try:
            body, _kid, exp, nonce = signed.verify(manifest, "ota", self.keys, now)
            self.nonces.check_and_add(nonce, exp)
        except signed.Refused as err:
            raise OtaRefused(err.reason, str(err))
        try:
            doc = json.loads(body)
            version = parse_version(doc["version"])
            size = int(doc["size"])
            digest = str(doc["sha256"])
            fmt = doc.get("format", "bundle")
        except (ValueError, KeyError, TypeError) as err:
            raise OtaRefused("malformed", "manifest body: " + str(err))
        if fmt != "bundle" or len(digest) != 64:
            raise OtaRefused("malformed", "format must be 'bundle' with a sha256 hex digest")
        if version <= self.version:
            raise OtaRefused(
                "downgrade", "offered " + doc["version"] + ", running " + ".".join(str(v) for v in self.version)
            )
        if not 0 < size <= self.max_size:
            raise OtaRefused("too-big", str(size) + " bytes; at most " + str(self.max_size))
        makedirs(self.root + "/ota")
        with open(self.root + "/ota/image.bin", "wb"):
            pass
        self.expect = {"version": version, "text": doc["version"], "size": size, "sha256": digest}
        self.received = 0
        self.hasher = hashlib.sha256()
        return version

    def chunk(self, data: bytes) -> bool:
        """Take one chunk (u32 offset + bytes); True when the image is complete and checked."""
        if self.expect is None or len(data) < 4:
            return False
        offset = struct.unpack_from(">I", data)[0]
        if offset != self.received:
            return False
        payload = memoryview(data)[4:]  # no copy of the chunk
        if self.received + len(payload) > self.expect["size"]:
            self._abort()
            raise OtaRefused("corrupt", "more data than the manifest's size")
        with open(self.root + "/ota/image.bin", "ab") as f:
            f.write(payload)
        self.hasher.update(payload)  # type: ignore[union-attr]
        self.received += len(payload)
        if self.received < self.expect["size"]:
            return False
        if hexlify(self.hasher.digest()) != self.expect["sha256"].lower():  # type: ignore[union-attr]
            self._abort()
            raise OtaRefused("corrupt", "sha256 of the image differs from the signed manifest")
        return True

    def _abort(self) -> None:
        self.expect = None
        self.hasher = None
        rmtree(self.root + "/ota/image.bin")

    def install(self) -> str:
        """Unpack the checked image and make it the next boot's firmware (pending)."""
        expect = self.expect
        if expect is None:
            raise OtaRefused("malformed", "no complete image to install")
        new = self.root + "/app.new"
        rmtree(new)
        os.mkdir(new)
        try:
            unpack_bundle(self.root + "/ota/image.bin", new)
            with open(new + "/VERSION") as f:
                if parse_version(f.read().strip()) != expect["version"]:
                    raise OtaRefused("corrupt", "VERSION in the image differs from the manifest")
        except (OSError, ValueError) as err:
            rmtree(new)
            self._abort()
            raise OtaRefused("corrupt", "cannot unpack the image: " + str(err))
        except OtaRefused:
            rmtree(new)
            self._abort()
            raise
        rmtree(self.root + "/app.prev")
        os.rename(self.root + "/app", self.root + "/app.prev")
        os.rename(new, self.root + "/app")
        bootsel.write_state(self.root, {"pending": expect["text"], "boots": 0})
        self._abort()
        return expect["text"]

    def mark_healthy(self):
        """The running firmware works: keep it. Returns its version if it was pending."""
        return bootsel.mark_healthy(self.root)

    def rolled_back(self):
        """The version that was rolled back at this boot, if any."""
        return bootsel.rolled_back(self.root)
