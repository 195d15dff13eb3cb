"""Mount a LittleFS image file at /flash on the MicroPython unix port (block 4096, read/prog 32,
as MicroPython's VfsLfs2 on an ESP32 or a Pico), formatting it first if it holds no filesystem.

A power cut in the middle of a write, for tests: when the file named by the environment
variable ``LFS_TEAR`` exists, the next block write stops half way (half its bytes reach the
image), prints ``[lfs] torn write`` and the process hangs until it is killed."""

import os
import time

import vfs

BLOCK = 4096
_ERASED = b"\xff" * 256


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
        self.tear = os.getenv("LFS_TEAR")
        self.f = open(path, "r+b")

    def readblocks(self, n: int, buf, offset: int = 0) -> None:
        self.f.seek(n * BLOCK + offset)
        self.f.readinto(buf)

    def writeblocks(self, n: int, buf, offset: int | None = None) -> None:
        self.f.seek(n * BLOCK + (offset or 0))
        if self.tear and _exists(self.tear):
            self.f.write(bytes(buf)[: len(buf) // 2])
            self.f.flush()
            print("[lfs] torn write: block", n, "half written; waiting for the kill")
            while True:
                time.sleep(1)
        self.f.write(buf)
        self.f.flush()

    def ioctl(self, op: int, arg):
        if op == 4:  # block count
            return self.blocks
        if op == 5:  # block size
            return BLOCK
        if op == 6:  # erase, from a small buffer (a board's block device allocates nothing)
            self.f.seek(arg * BLOCK)
            for _ in range(BLOCK // len(_ERASED)):
                self.f.write(_ERASED)
            self.f.flush()
            return 0
        return 0


def _exists(path: str) -> bool:
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def mount(path: str, blocks: int = 256) -> None:
    bdev = FileBlockDevice(path, blocks)
    try:
        fs = vfs.VfsLfs2(bdev, readsize=32, progsize=32, lookahead=32)
    except OSError:
        vfs.VfsLfs2.mkfs(bdev, readsize=32, progsize=32, lookahead=32)
        fs = vfs.VfsLfs2(bdev, readsize=32, progsize=32, lookahead=32)
    vfs.mount(fs, "/flash")
    os.chdir("/flash")
