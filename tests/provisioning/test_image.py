"""Node images: compiled firmware, LittleFS round trip, the merged ESP32 flash image."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from esptool.bin_image import ELFSection, ESP32FirmwareImage

from provisioning import image
from provisioning.errors import ProvisionInputError
from provisioning.vm import micropython_path


def esp32_firmware(path: Path) -> Path:
    """A small but valid ESP32 application image, made with esptool's own API."""
    img = ESP32FirmwareImage()
    img.entrypoint = 0x40080000
    img.segments = [
        ELFSection(b".dram0.data", 0x3FFB0000, b"\x00" * 64, 0),
        ELFSection(b".iram0.text", 0x40080000, b"\x01" * 256, 0),
    ]
    img.save(str(path))
    return path


@pytest.mark.parametrize("target", ["esp32", "rp2"])
def test_firmware_compiles_for_the_target_and_the_bytecode_runs(
    target: str, tmp_path: Path
) -> None:
    files = image.compile_firmware(image.target(target))
    assert files["app/VERSION"] == image.firmware_version().encode()
    assert files["main.py"].startswith(b'"""Boot')
    mpys = {k: v for k, v in files.items() if k.endswith(".mpy")}
    assert "bootsel.mpy" in mpys and "app/cenode/node.mpy" in mpys
    assert all(data[:2] == b"M\x06" for data in mpys.values())  # .mpy version 6 (MicroPython 1.23+)
    for name, data in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(data)
    # bytecode without native code is portable: the unix port runs what was built for the board
    run = subprocess.run(
        [
            micropython_path(),
            "-c",
            "import sys; sys.path.insert(0, {!r}); from cenode import wire; "
            "print(wire.encode_readings(1, 1795500000, [('fill_pct', 42.5), ('distance_mm', 640), ('temperature_c', 18.5)]).hex())".format(
                str(tmp_path / "app")
            ),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert run.stdout.strip() == "ce010100016b0527e0030104422a000002020280030441940000"


def test_littlefs_round_trip() -> None:
    files = {
        "main.py": b"print(1)\n",
        "app/cenode/x.mpy": bytes(range(256)) * 20,
        "certs/ca.der": b"\x30\x82",
    }
    img = image.littlefs_image(files, 256 * 4096)
    assert len(img) == 256 * 4096
    assert image.read_littlefs(img) == files
    with pytest.raises(ProvisionInputError, match="do not fit"):
        image.littlefs_image({"big": bytes(200_000)}, 64 * 4096)


def test_unknown_target() -> None:
    with pytest.raises(ProvisionInputError, match="unknown target") as info:
        image.target("esp8266")
    assert "esp32" in (info.value.hint or "")


def test_merged_flash_image_puts_firmware_and_filesystem_at_their_offsets(tmp_path: Path) -> None:
    fw = esp32_firmware(tmp_path / "micropython.bin")
    fs = image.littlefs_image({"main.py": b"x"}, 64 * 4096)
    out = image.merge_bin(fw, fs, tmp_path / "flash.bin", image.TARGETS["esp32"])
    merged = out.read_bytes()
    assert merged[0x1000 : 0x1000 + fw.stat().st_size] == fw.read_bytes()
    assert merged[0x200000 : 0x200000 + len(fs)] == fs
    assert merged[:0x1000] == b"\xff" * 0x1000  # merge-bin pads gaps with 0xff


def test_a_file_that_is_not_esp32_firmware_is_refused_before_anything_is_written(
    tmp_path: Path,
) -> None:
    bad = tmp_path / "firmware.uf2"
    bad.write_bytes(b"UF2\n" + bytes(600))
    with pytest.raises(ProvisionInputError, match="not an ESP32 firmware image") as info:
        image.merge_bin(bad, b"", tmp_path / "flash.bin", image.TARGETS["esp32"])
    assert ".bin" in (info.value.hint or "")
    assert not (tmp_path / "flash.bin").exists()
    truncated = tmp_path / "cut.bin"
    truncated.write_bytes(esp32_firmware(tmp_path / "ok.bin").read_bytes()[:40])
    with pytest.raises(ProvisionInputError, match="not a valid esp32 image"):
        image.check_esp_firmware(truncated)
    with pytest.raises(ProvisionInputError, match="no merged flash image"):
        image.merge_bin(tmp_path / "ok.bin", b"", tmp_path / "x.bin", image.TARGETS["rp2"])
