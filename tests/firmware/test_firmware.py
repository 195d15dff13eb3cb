"""The firmware's own tests, on CPython (here, one pytest test each) and on the real MicroPython
unix port under a heap limit; every firmware file compiles with mpy-cross for ESP32 and RP2040;
pyright with the MicroPython stub packages is clean."""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FIRMWARE = ROOT / "firmware"
TESTS = FIRMWARE / "tests"
VECTORS = ROOT / "protocols" / "vectors"
MODULES = (
    "test_wire",
    "test_fqueue",
    "test_crypto",
    "test_delegation",
    "test_mqtt",
    "test_link",
    "test_ota",
    "test_apps",
    "test_node",
    "test_config",
)
HEAP = "192K"  # the tests themselves (compiled from source on the VM) need more than a node


def bin_path(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: run 'make venv' (the firmware extra)")
    return found


def firmware_tests() -> list[tuple[str, str]]:
    sys.path[:0] = [str(FIRMWARE), str(TESTS)]
    try:
        found = []
        for m in MODULES:
            module = importlib.import_module(m)
            found += [(m, a) for a in sorted(dir(module)) if a.startswith("test_")]
        return found
    finally:
        del sys.path[:2]


@pytest.fixture
def firmware_path(tmp_path: Path) -> Iterator[None]:
    import t  # type: ignore[import-not-found]

    t.VECTORS, t.TMP = str(VECTORS), str(tmp_path)
    yield


sys.path[:0] = [str(FIRMWARE), str(TESTS)]  # the firmware's own modules, for this process


@pytest.mark.usefixtures("firmware_path")
@pytest.mark.parametrize(("module", "name"), firmware_tests())
def test_on_cpython(module: str, name: str) -> None:
    fn: Callable[[], None] = getattr(importlib.import_module(module), name)
    fn()


def test_on_micropython_under_a_heap_limit() -> None:
    run = subprocess.run(
        [bin_path("micropython"), "-X", f"heapsize={HEAP}", str(TESTS / "run.py"), str(VECTORS)],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    lines = run.stdout.splitlines()
    passed = {line.split()[1] for line in lines if line.startswith("PASS ")}
    failed = [line for line in lines if line.startswith("FAIL ")]
    assert run.returncode == 0 and not failed, run.stdout[-3000:] + run.stderr[-2000:]
    assert passed == {f"{m}.{n}" for m, n in firmware_tests()}
    assert lines[-1] == f"{len(passed)} passed, 0 failed"


def firmware_files() -> list[Path]:
    return sorted(
        [FIRMWARE / "main.py", FIRMWARE / "bootsel.py", *(FIRMWARE / "cenode").glob("*.py")]
    )


@pytest.mark.parametrize("arch", ["xtensawin", "armv6m"])
def test_every_firmware_file_compiles_with_mpy_cross(arch: str, tmp_path: Path) -> None:
    mpy_cross = bin_path("mpy-cross")
    for f in firmware_files():
        out = tmp_path / f.with_suffix(".mpy").name
        run = subprocess.run(
            [mpy_cross, f"-march={arch}", "-o", str(out), str(f)],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        assert run.returncode == 0, f"{f.name}: {run.stderr}"
        assert out.stat().st_size > 0


def test_mpy_cross_rejects_cpython_only_syntax(tmp_path: Path) -> None:
    """The check above can fail: a match statement is refused."""
    bad = tmp_path / "bad.py"
    bad.write_text("match 1:\n    case 1:\n        pass\n")
    run = subprocess.run(
        [bin_path("mpy-cross"), str(bad)], capture_output=True, check=False, timeout=60
    )
    assert run.returncode != 0


@pytest.mark.parametrize("config", ["pyrightconfig.json", "pyrightconfig.rp2.json"])
def test_pyright_with_the_micropython_stubs_is_clean(config: str) -> None:
    stubs = ROOT / ".venv" / "mpy-stubs"
    if not (stubs / ("rp2" if "rp2" in config else "esp32") / "machine.pyi").exists():
        pytest.fail(f"MicroPython stubs missing in {stubs}: run 'make venv'")
    run = subprocess.run(
        [bin_path("pyright"), "-p", config],
        cwd=FIRMWARE,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-4000:]
    assert "0 errors" in run.stdout


def test_a_tls_verification_failure_is_a_failed_connect_not_a_crash(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """MicroPython's tls says a wrong certificate (a proxy, a captive portal, the wrong broker)
    with ValueError; the link retries OSError with backoff, so the node must see that, not
    crash to its REPL (a README run met a TLS-intercepting egress proxy at the broker's address)."""
    from types import SimpleNamespace

    from cenode import net  # type: ignore[import-not-found]

    class Context:
        def __init__(self, _protocol: int) -> None:
            self.verify_mode = 0

        def load_verify_locations(self, _ca: bytes) -> None: ...

        def load_cert_chain(self, _cert: bytes, _key: bytes) -> None: ...

        def wrap_socket(self, _raw: object, server_hostname: str = "") -> object:
            raise ValueError("\nThe certificate Common Name (CN) does not match with the expected CN\n")

    fake = SimpleNamespace(PROTOCOL_TLS_CLIENT=0, CERT_REQUIRED=2, SSLContext=Context)
    monkeypatch.setitem(sys.modules, "tls", fake)
    with pytest.raises(OSError, match=r"^TLS: The certificate Common Name \(CN\) does not match"):
        net._wrap(object(), "10.0.0.2", {"ca": b"", "cert": b"", "key": b""})
