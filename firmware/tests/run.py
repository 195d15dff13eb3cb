"""Run the firmware tests; the same file runs on CPython and on the MicroPython unix port.

    micropython -X heapsize=64K firmware/tests/run.py [VECTORS_DIR]

Prints one line per test and ``N passed, M failed``; exits 1 when any failed. Each test's peak
heap use is printed on MicroPython (``gc.mem_alloc``)."""

import gc
import os
import sys

HERE = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."
FIRMWARE = HERE + "/.."
sys.path.insert(0, FIRMWARE)
sys.path.insert(0, HERE)

import t  # noqa: E402

MODULES = ("test_wire", "test_fqueue", "test_crypto", "test_delegation", "test_mqtt", "test_link", "test_ota", "test_apps", "test_node", "test_config")


def main() -> int:
    t.VECTORS = sys.argv[1] if len(sys.argv) > 1 else FIRMWARE + "/../protocols/vectors"
    t.TMP = "/tmp/cenode-tests-" + "".join("%02x" % b for b in os.urandom(4))
    os.mkdir(t.TMP)
    passed = failed = 0
    only = sys.argv[2] if len(sys.argv) > 2 else ""
    try:
        for name in MODULES:
            module = __import__(name)
            for attr in sorted(dir(module)):
                if not attr.startswith("test_") or only and only not in attr:
                    continue
                gc.collect()
                try:
                    getattr(module, attr)()
                except Exception as err:  # report every failure, keep going
                    failed += 1
                    print("FAIL", name + "." + attr, type(err).__name__, err)
                    if hasattr(sys, "print_exception"):
                        sys.print_exception(err)  # type: ignore[attr-defined]
                    continue
                passed += 1
                print("PASS", name + "." + attr)
            del sys.modules[name]  # keep the heap for the next module (a device has little)
            module = None
    finally:
        from cenode.util import rmtree

        rmtree(t.TMP)
    print(str(passed) + " passed, " + str(failed) + " failed")
    return 1 if failed else 0


sys.exit(main())
