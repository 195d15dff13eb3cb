"""Signed OTA on the node: good updates apply; unsigned, wrongly signed, downgraded and corrupt
images are refused; an image that never reports healthy is rolled back at a later boot."""

import os

import bootsel
from t import eq, raises, read, tmpdir, vectors, write

from cenode.util import b64url_decode
from cenode.ota import Ota, OtaRefused


def device() -> tuple:
    doc = vectors("ota.json")
    root = tmpdir()
    os.mkdir(root + "/app")
    os.mkdir(root + "/app/cenode")
    write(root + "/app/VERSION", doc["running"])
    write(root + "/app/cenode/hello.py", "WORD = 'v1.0.0'\n")
    keys = {k: b64url_decode(v) for k, v in doc["keys"].items()}
    return root, Ota(root, keys), doc


def send_image(ota: Ota, image: bytes, size: int = 100) -> bool:
    done = False
    for at in range(0, len(image), size):
        done = ota.chunk(at.to_bytes(4, "big") + image[at : at + size])
    return done


def refusal(ota: Ota, manifest: str) -> str:
    with raises(OtaRefused) as r:
        ota.offer(manifest.encode(), None)
    return r.value.reason


def test_a_good_signed_update_is_applied_and_kept_once_healthy() -> None:
    root, ota, doc = device()
    eq(ota.offer(doc["manifest"].encode(), None), (1, 1, 0))
    eq(send_image(ota, bytes.fromhex(doc["image"])), True)
    eq(ota.install(), "1.1.0")
    eq(read(root + "/app/VERSION"), b"1.1.0")
    eq(read(root + "/app/cenode/hello.py"), b"WORD = 'v1.1.0'\n")
    eq(read(root + "/app.prev/VERSION"), b"1.0.0")
    eq(bootsel.read_state(root), {"pending": "1.1.0", "boots": 0})
    eq(bootsel.select(root), root + "/app")
    eq(ota.mark_healthy(), "1.1.0")
    eq(bootsel.read_state(root), {})
    eq("app.prev" in os.listdir(root), False)
    for _ in range(5):  # kept for good
        bootsel.select(root)
    eq(read(root + "/app/VERSION"), b"1.1.0")


def test_unsigned_wrongly_signed_and_downgrade_are_refused() -> None:
    root, ota, doc = device()
    eq(refusal(ota, doc["unsigned"]), "unsigned")
    eq(refusal(ota, doc["wrong_key"]), "bad-signature")
    eq(refusal(ota, doc["downgrade"]), "downgrade")
    eq(refusal(ota, doc["same_version"]), "downgrade")
    eq(refusal(ota, "{not json"), "malformed")
    eq(read(root + "/app/VERSION"), b"1.0.0")


def test_a_replayed_manifest_is_refused() -> None:
    root, ota, doc = device()
    ota.offer(doc["manifest"].encode(), None)
    eq(refusal(ota, doc["manifest"]), "replayed")


def test_a_corrupt_image_is_refused_and_nothing_changes() -> None:
    root, ota, doc = device()
    ota.offer(doc["manifest"].encode(), None)
    with raises(OtaRefused) as r:
        send_image(ota, bytes.fromhex(doc["corrupt_image"]))
    eq(r.value.reason, "corrupt")
    eq(read(root + "/app/VERSION"), b"1.0.0")
    eq("app.prev" in os.listdir(root), False)
    with raises(OtaRefused):
        ota.install()


def test_an_image_whose_version_lies_is_refused() -> None:
    root, ota, doc = device()
    ota.offer(doc["lying_manifest"].encode(), None)
    eq(send_image(ota, bytes.fromhex(doc["lying_image"])), True)
    with raises(OtaRefused) as r:
        ota.install()
    eq(r.value.reason, "corrupt")
    eq(read(root + "/app/VERSION"), b"1.0.0")
    eq([n for n in os.listdir(root) if n.startswith("app")], ["app"])


def test_chunks_out_of_order_are_ignored_and_extra_data_refused() -> None:
    root, ota, doc = device()
    image = bytes.fromhex(doc["image"])
    ota.offer(doc["manifest"].encode(), None)
    eq(ota.chunk((50).to_bytes(4, "big") + image[50:60]), False)
    eq(ota.received, 0)
    eq(ota.chunk(b"\x00"), False)
    with raises(OtaRefused):
        ota.chunk((0).to_bytes(4, "big") + image + b"extra")


def test_a_new_image_that_never_reports_healthy_is_rolled_back() -> None:
    root, ota, doc = device()
    ota.offer(doc["manifest"].encode(), None)
    send_image(ota, bytes.fromhex(doc["image"]))
    ota.install()
    for boot in range(bootsel.MAX_BOOTS):  # it boots, crashes or never gets an ack, resets
        bootsel.select(root)
        eq(read(root + "/app/VERSION"), b"1.1.0", "boot " + str(boot))
    bootsel.select(root)
    eq(read(root + "/app/VERSION"), b"1.0.0")
    eq(read(root + "/app/cenode/hello.py"), b"WORD = 'v1.0.0'\n")
    eq(ota.rolled_back(), "1.1.0")
    eq("app.prev" in os.listdir(root), False)
    ota.mark_healthy()  # the old firmware reports, and the rollback is done with
    eq(ota.rolled_back(), None)
    eq(ota.version, (1, 0, 0))
