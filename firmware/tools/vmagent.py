"""The MicroPython side of ``cityedge provision vm``: a board without the board.

Runs on the unix port; mounts a LittleFS image file (block 4096, read/prog 32, as on an ESP32
or a Pico) at /flash, makes it the current folder, then executes code blocks sent by the bridge
on stdin (``<length>\\n<code>``). After each block it writes ``\\x00ERR\\x00`` + the traceback (if
any) + ``\\x00END\\x00`` to stdout, so the bridge can answer like a raw REPL.

    micropython vmagent.py IMAGE [BLOCKS]
"""

import sys

from lfsmount import mount


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
