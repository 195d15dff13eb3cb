"""What goes onto a node: the compiled firmware, its config and credentials, as a file tree, a
LittleFS image, a merged ESP32 flash image; and the two ways to put it there (esptool over a
serial port, or mpremote onto a running MicroPython board).

The device tree::

    main.py                  the loader (source: MicroPython runs main.py)
    bootsel.mpy              boot selection and rollback (never replaced by OTA)
    app/VERSION              firmware version
    app/cenode/*.mpy         the node firmware, compiled with mpy-cross for the target
    config.json              this node's config (see firmware/cenode/config.py)
    certs/ca.der node.der node.key.der   TLS material (DER: smaller to parse on the node)

Targets: ``esp32`` (mpy-cross -march=xtensawin; LittleFS at 0x200000, 2 MiB, on a 4 MiB board),
``rp2`` (-march=armv6m; 1408 KiB), ``unix`` (the MicroPython unix port, for tests; 1 MiB).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from provisioning.errors import ProvisionInputError, ProvisionRunError

FIRMWARE = Path(__file__).resolve().parents[1] / "firmware"
BLOCK_SIZE = 4096


@dataclass(frozen=True)
class Target:
    name: str
    march: str | None
    fs_bytes: int
    fs_offset: int | None  # where the filesystem sits in flash (merged images)
    app_offset: int | None  # where the MicroPython firmware file goes
    pins: Mapping[str, Mapping[str, int]]


_ESP32_PINS = {
    "bin-fill": {"trigger": 5, "echo": 18, "temp": 34},
    "water": {"ph": 34, "turbidity": 35, "temp": 32},
    "gate-relay": {"relay": 26, "door": 27},
}
_RP2_PINS = {
    "bin-fill": {"trigger": 2, "echo": 3, "temp": 26},
    "water": {"ph": 26, "turbidity": 27, "temp": 28},
    "gate-relay": {"relay": 15, "door": 14},
}
TARGETS = {
    "esp32": Target("esp32", "xtensawin", 0x200000, 0x200000, 0x1000, _ESP32_PINS),
    "rp2": Target("rp2", "armv6m", 1408 * 1024, None, None, _RP2_PINS),
    "unix": Target("unix", None, 1024 * 1024, None, None, _ESP32_PINS),
}


def target(name: str) -> Target:
    try:
        return TARGETS[name]
    except KeyError:
        raise ProvisionInputError(
            f"unknown target {name!r}", hint=f"one of {', '.join(TARGETS)}"
        ) from None


def tool(name: str, extra: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if found is None:
        raise ProvisionRunError(f"{name} is not installed", hint=f"pip install 'cityedge[{extra}]'")
    return found


def firmware_version() -> str:
    return (FIRMWARE / "VERSION").read_text().strip()


def compile_firmware(tgt: Target, version: str | None = None) -> dict[str, bytes]:
    """main.py, bootsel.mpy and app/ (VERSION, cenode/*.mpy) compiled for ``tgt``."""
    mpy_cross = tool("mpy-cross", "firmware")
    files: dict[str, bytes] = {"main.py": (FIRMWARE / "main.py").read_bytes()}
    sources = [("bootsel.mpy", FIRMWARE / "bootsel.py")] + [
        (f"app/cenode/{p.stem}.mpy", p) for p in sorted((FIRMWARE / "cenode").glob("*.py"))
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for name, src in sources:
            out = Path(tmp) / "out.mpy"
            argv = [
                mpy_cross,
                *([f"-march={tgt.march}"] if tgt.march else []),
                # the name tracebacks show: the node's own path, not this machine's (which the
                # node would also keep in its heap, once per module)
                "-s",
                name.removeprefix("app/").removesuffix(".mpy") + ".py",
                "-o",
                str(out),
                str(src),
            ]
            run = subprocess.run(  # noqa: S603 - argv is ours
                argv, capture_output=True, text=True, check=False, timeout=60
            )
            if run.returncode != 0:
                raise ProvisionRunError(
                    f"mpy-cross failed on {src.name}: {run.stderr.strip()}",
                    hint="the firmware must use MicroPython syntax only (no match, no PEP 695)",
                )
            files[name] = out.read_bytes()
    files["app/VERSION"] = (version or firmware_version()).encode()
    return files


def node_files(
    firmware: Mapping[str, bytes], config: Mapping[str, object], certs: Mapping[str, bytes]
) -> dict[str, bytes]:
    out = dict(firmware)
    out["config.json"] = json.dumps(config, indent=1, sort_keys=True).encode()
    for name in ("ca.der", "node.der", "node.key.der"):
        out[f"certs/{name}"] = certs[name]
    return out


def littlefs_image(files: Mapping[str, bytes], size: int, disk_version: int | None = None) -> bytes:
    """A LittleFS 2 image (block 4096, read/prog 32, as MicroPython's VfsLfs2) holding ``files``."""
    from littlefs import LittleFS

    fs = LittleFS(
        block_size=BLOCK_SIZE,
        block_count=size // BLOCK_SIZE,
        read_size=32,
        prog_size=32,
        lookahead_size=32,
        disk_version=disk_version or 0,  # 0: the library's newest
    )
    used = sum(len(d) for d in files.values())
    if used > size * 3 // 4:
        raise ProvisionInputError(
            f"{used} bytes of files do not fit a {size} byte filesystem with room to spare",
            hint="a smaller firmware, or a target with a larger filesystem",
        )
    for name in sorted(files):
        parts = name.split("/")
        for i in range(1, len(parts)):
            d = "/".join(parts[:i])
            with contextlib.suppress(FileExistsError):
                fs.mkdir(d)
        with fs.open(name, "wb") as f:
            f.write(files[name])
    return bytes(fs.context.buffer)


def read_littlefs(image: bytes) -> dict[str, bytes]:
    """Every file in a LittleFS image (block 4096, read/prog 32)."""
    from littlefs import LittleFS

    fs = LittleFS(
        block_size=BLOCK_SIZE,
        block_count=len(image) // BLOCK_SIZE,
        read_size=32,
        prog_size=32,
        lookahead_size=32,
        mount=False,
    )
    fs.context.buffer[:] = image
    fs.mount()
    out: dict[str, bytes] = {}
    for root, _dirs, names in fs.walk("/"):
        for n in names:
            path = f"{root.rstrip('/')}/{n}".lstrip("/")
            with fs.open(path, "rb") as f:
                out[path] = f.read()
    return out


def check_esp_firmware(path: Path, chip: str = "esp32") -> None:
    """Refuse a file that is not an ESP32 application image before anything is written."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ProvisionInputError(
            f"cannot read the firmware file {path}: {err.strerror}",
            hint="give the MicroPython .bin for your board (micropython.org/download)",
        ) from err
    if len(data) < 24 or data[0] != 0xE9:
        raise ProvisionInputError(
            f"{path} is not an ESP32 firmware image (first byte 0x{data[:1].hex() or '??'}, not 0xe9)",
            hint="use the MicroPython firmware .bin for ESP32, not a .uf2, .elf or .zip",
        )
    from esptool.bin_image import LoadFirmwareImage

    try:
        LoadFirmwareImage(chip, str(path))
    except Exception as err:  # esptool raises FatalError and struct errors for bad images
        raise ProvisionInputError(
            f"{path} is not a valid {chip} image: {err}",
            hint="download the firmware file again; it may be truncated",
        ) from err


def merge_bin(firmware: Path, fs_image: bytes, out: Path, tgt: Target, chip: str = "esp32") -> Path:
    """One flash image: the technician's MicroPython firmware and our filesystem (esptool merge-bin)."""
    if tgt.fs_offset is None or tgt.app_offset is None:
        raise ProvisionInputError(
            f"target {tgt.name} has no merged flash image",
            hint="copy the files with mpremote (--copy) instead",
        )
    check_esp_firmware(firmware, chip)
    import esptool

    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(sys.stderr):
        fs = Path(tmp) / "fs.img"
        fs.write_bytes(fs_image)
        try:
            esptool.main(
                [
                    "--chip",
                    chip,
                    "merge-bin",
                    "-o",
                    str(out),
                    hex(tgt.app_offset),
                    str(firmware),
                    hex(tgt.fs_offset),
                    str(fs),
                ]
            )
        except (esptool.FatalError, SystemExit) as err:
            raise ProvisionRunError(f"esptool merge-bin failed: {err}") from err
    return out


def flash(port: str, merged: Path, chip: str = "esp32", baud: int = 460800) -> None:
    """Write the merged image over a serial port with esptool."""
    import esptool

    try:
        # esptool reports on stdout: that is for the command's own output (--json)
        with contextlib.redirect_stdout(sys.stderr):
            esptool.main(
                [
                    "--chip",
                    chip,
                    "--port",
                    port,
                    "--baud",
                    str(baud),
                    "write-flash",
                    "0x0",
                    str(merged),
                ]
            )
    except (esptool.FatalError, OSError, SystemExit) as err:
        raise ProvisionRunError(
            f"flashing over {port} failed: {' '.join(str(err).split())}",
            hint="check the USB cable and the port; hold BOOT while pressing EN to enter the bootloader",
        ) from err


def _last_words(lines: list[str]) -> str:
    """What a tool said last, without its traceback: ``read failed: socket disconnected``."""
    said = [
        ln.strip()
        for ln in lines
        if ln.strip() and not ln.startswith((" ", "\t")) and not ln.startswith("Traceback")
    ]
    last = said[-1] if said else "no output"
    head, sep, rest = last.partition(": ")
    return rest if sep and "." in head and " " not in head else last  # drop "pkg.SomeError: "


def mpremote_copy(
    device: str,
    files: Mapping[str, bytes],
    progress: Callable[[str], None] | None = None,
    timeout_s: float = 300,
    reset: bool = True,
) -> None:
    """Copy ``files`` onto a running MicroPython board with the real mpremote (one session):
    remove the old app, make the folders, copy each file, then hard-reset the board so it boots
    the node (``reset=False`` for the unix-port VM); ``progress`` gets each file name."""
    mpremote = tool("mpremote", "provisioning")
    dirs = sorted({"/".join(n.split("/")[:i]) for n in files for i in range(1, n.count("/") + 1)})
    prep = (
        "import os\n"
        "def _rm(p):\n"
        " try:\n"
        "  m=os.stat(p)[0]\n"
        " except OSError:\n"
        "  return\n"
        " if m&0x4000:\n"
        "  for n in os.listdir(p):_rm(p+'/'+n)\n"
        "  os.rmdir(p)\n"
        " else:os.remove(p)\n"
        "for p in ('app','app.prev','app.new','ota','ota.json'):_rm(p)\n"
        f"for d in {dirs!r}:\n"
        " try:os.mkdir(d)\n"
        " except OSError:pass\n"
    )
    with tempfile.TemporaryDirectory() as tmp:
        argv = [mpremote, "connect", device, "exec", prep]
        for name in sorted(files):
            local = Path(tmp) / name
            local.parent.mkdir(parents=True, exist_ok=True)
            local.write_bytes(files[name])
            argv += ["+", "fs", "cp", str(local), f":{name}"]
        if reset:
            argv += ["+", "reset"]
        proc = subprocess.Popen(  # noqa: S603 - argv is ours
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},  # each "cp" line as it happens
        )
        assert proc.stdout is not None
        tail: list[str] = []
        for line in proc.stdout:
            tail = [*tail[-20:], line.rstrip()]
            if line.startswith("cp ") and progress is not None:
                progress(line.split(":", 1)[-1].strip())
        try:
            code = proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise ProvisionRunError(f"mpremote did not finish within {timeout_s} s") from None
    if code != 0:
        raise ProvisionRunError(
            f"mpremote could not copy onto {device}: {_last_words(tail)}",
            hint="check the board is connected, running MicroPython, and not busy (press Ctrl-C in its REPL)",
        )
