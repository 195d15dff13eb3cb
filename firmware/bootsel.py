"""Which firmware to boot: the stable part that OTA never replaces (with main.py).

An update swaps ``app/`` for the new image and keeps the old one in ``app.prev/``, with
``ota.json`` saying ``{"pending": "<new version>", "boots": 0}``. Each boot of a pending image
counts; the image proves itself by calling :func:`cenode.ota.Ota.mark_healthy` (after its first
acknowledged report). A pending image booted more than ``MAX_BOOTS`` times without that is rolled
back: ``app.prev/`` becomes ``app/`` again and ``ota.json`` says ``{"rolled_back": ...}`` so the
old firmware can report it. A watchdog reset or a crash loop counts as a boot like any other.
"""

import json
import os

MAX_BOOTS = 2
STATE = "ota.json"


def exists(path: str) -> bool:
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def rmtree(path: str) -> None:
    try:
        mode = os.stat(path)[0]
    except OSError:
        return
    if mode & 0x4000:
        for name in os.listdir(path):
            rmtree(path + "/" + name)
        os.rmdir(path)
    else:
        os.remove(path)


def read_state(root: str) -> dict:
    try:
        with open(root + "/" + STATE) as f:
            state = json.load(f)
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def write_state(root: str, state: dict) -> None:
    tmp = root + "/" + STATE + ".tmp"
    with open(tmp, "w") as f:
        json.dump(state, f)
    os.rename(tmp, root + "/" + STATE)  # atomic on LittleFS: a power cut leaves old or new


def version(root: str) -> tuple:
    """The running firmware's (major, minor, patch) from app/VERSION; (0, 0, 0) if unreadable."""
    try:
        with open(root + "/app/VERSION") as f:
            parts = f.read().strip().split(".")
        return (int(parts[0]), int(parts[1]), int(parts[2]))
    except (OSError, ValueError, IndexError):
        return (0, 0, 0)


def mark_healthy(root: str):
    """The running firmware works: keep it. Returns its version if it was pending."""
    state = read_state(root)
    pending = state.get("pending")
    if not pending and "rolled_back" not in state:
        return None
    rmtree(root + "/app.prev")
    write_state(root, {})
    return pending


def rolled_back(root: str):
    """The version rolled back at a recent boot, if not yet reported."""
    return read_state(root).get("rolled_back")


def select(root: str) -> str:
    """Count this boot, roll back when due, and return the folder to run the app from."""
    state = read_state(root)
    pending = state.get("pending")
    if pending and exists(root + "/app.prev"):
        boots = int(state.get("boots", 0)) + 1
        if boots > MAX_BOOTS:
            rmtree(root + "/app.bad")
            os.rename(root + "/app", root + "/app.bad")
            os.rename(root + "/app.prev", root + "/app")
            rmtree(root + "/app.bad")
            write_state(root, {"rolled_back": pending, "boots": boots - 1})
        else:
            state["boots"] = boots
            write_state(root, state)
    return root + "/app"


def boot(root: str | None = None) -> None:
    """main.py's work: select the firmware, guard a trial image with the watchdog, run the node.
    (Here, compiled, rather than in main.py, which MicroPython must compile from source.)"""
    import sys

    here = str(root) if root is not None else ""
    if root is None:
        here = sys.argv[1] if len(sys.argv) > 1 else str(os.getcwd()).rstrip("/")
    sys.path.insert(0, select(here))
    if read_state(here).get("pending"):
        # a new image on trial: if it crashes into the REPL or hangs, the watchdog resets the
        # board, and the next boot is counted
        import machine

        machine.WDT(timeout=60000)
    from cenode import node

    node.main(here)
