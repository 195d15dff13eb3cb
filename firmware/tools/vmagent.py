"""The MicroPython side of ``cityedge provision vm``: the REPL of a board without the board.

Runs on the unix port; mounts a LittleFS image file (block 4096, read/prog 32, as on an ESP32
or a Pico) at /flash, makes it the current folder, then executes code blocks sent by the bridge
on stdin (``<length>\\n<code>``). After each block it writes ``\\x00ERR\\x00`` + the traceback (if
any) + ``\\x00END\\x00`` to stdout, so the bridge can answer like a raw REPL.

``machine.reset()`` in a block (``mpremote reset``) ends the agent with the reset exit code of
``firmware/sim/machine.py`` after answering ``\\x00ERR\\x00\\x00RESET\\x00\\x00END\\x00``: the
bridge then boots the board (``boot_image.py``), as a real board restarts into ``main.py``.

    MICROPYPATH=firmware/sim:firmware/tools micropython vmagent.py IMAGE [BLOCKS]
"""

import sys

from lfsmount import mount

RESET_EXIT_CODE = 75  # firmware/sim/machine.py


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
        reset = False
        try:
            exec(code, env)
        except BaseException as e:  # a REPL reports everything, SystemExit included
            import io

            reset = isinstance(e, SystemExit) and bool(e.args) and e.args[0] == RESET_EXIT_CODE
            buf = io.StringIO()
            sys.print_exception(e, buf)  # type: ignore[attr-defined]
            err = buf.getvalue()
        out.write("\x00ERR\x00" + ("\x00RESET\x00" if reset else err) + "\x00END\x00")
        out.flush() if hasattr(out, "flush") else None
        if reset:
            sys.exit(RESET_EXIT_CODE)


mount(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 256)
serve()
