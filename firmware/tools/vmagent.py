"""The MicroPython side of ``cityedge provision vm``: a board without the board.

Runs on the unix port; mounts a LittleFS image file (block 4096, read/prog 32, as on an ESP32
or a Pico) at /flash, makes it the current folder, then executes code blocks sent by the bridge
on stdin (``<length>\\n<code>``). After each block it writes ``\\x00ERR\\x00`` + the traceback (if
any) + ``\\x00END\\x00`` to stdout, so the bridge can answer like a raw REPL.

    micropython vmagent.py IMAGE [BLOCKS]
"""

import os
import sys

import vfs

BLOCK = 4096


class FileBlockDevice:
    """A block device backed by a file (the littlefs image), extended block protocol."""

    def __init__(self, path: str, blocks: int) -> None:
        try:
            size = os.stat(path)[6]
        except OSError:
            size = 0
        if size < blocks * BLOCK:
            erased = b"\xff" * BLOCK
            with open(path, "ab") as f:
                f.write(erased[: (BLOCK - size % BLOCK) % BLOCK])
                for _ in range(size // BLOCK + (1 if size % BLOCK else 0), blocks):
                    f.write(erased)
            size = blocks * BLOCK
        self.blocks = size // BLOCK
        self.f = open(path, "r+b")

    def readblocks(self, n: int, buf, offset: int = 0) -> None:
        self.f.seek(n * BLOCK + offset)
        self.f.readinto(buf)

    def writeblocks(self, n: int, buf, offset: int | None = None) -> None:
        self.f.seek(n * BLOCK + (offset or 0))
        self.f.write(buf)
        self.f.flush()

    def ioctl(self, op: int, arg):
        if op == 4:  # block count
            return self.blocks
        if op == 5:  # block size
            return BLOCK
        if op == 6:  # erase
            self.f.seek(arg * BLOCK)
            self.f.write(b"\xff" * BLOCK)
            return 0
        return 0


def mount(path: str, blocks: int) -> None:
    bdev = FileBlockDevice(path, blocks)
    try:
        fs = vfs.VfsLfs2(bdev, readsize=32, progsize=32, lookahead=32)
    except OSError:
        vfs.VfsLfs2.mkfs(bdev, readsize=32, progsize=32, lookahead=32)
        fs = vfs.VfsLfs2(bdev, readsize=32, progsize=32, lookahead=32)
    vfs.mount(fs, "/flash")
    os.chdir("/flash")


def serve() -> None:
    stdin = sys.stdin.buffer
    out = sys.stdout
    env = {"__name__": "__main__"}
    while True:
        line = stdin.readline()
        if not line:
            return
        code = stdin.read(int(line))
        err = ""
        try:
            exec(code, env)
        except BaseException as e:  # a REPL reports everything, SystemExit included
            import io

            buf = io.StringIO()
            sys.print_exception(e, buf)  # type: ignore[attr-defined]
            err = buf.getvalue()
        out.write("\x00ERR\x00" + err + "\x00END\x00")
        out.flush() if hasattr(out, "flush") else None


mount(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 256)
serve()
