"""The node's boot: read the config, load the running node's modules, make the board, the
network and the :class:`cenode.node.Node`. Loaded by :func:`cenode.node.main` and unloaded
again before the loop runs, like everything only the boot needs.

Heap (on the 64-bit unix port a node reporting over plain TCP has ~53-55 KB of a 64 KB heap in
use):

- config.json is read first, with little else loaded; what reading it needed (the config
  module, the apps' settings schema, the trusted keys' Ed25519 and SHA-512) is unloaded before
  the running node's modules come in, so the boot's peak and the running node each stay below
  what both together would need;
- modules are imported one at a time with a collection after each (:func:`load`);
- unloading takes the module out of ``sys.modules`` *and* out of the ``cenode`` package
  (:func:`forget`).
"""

import gc
import sys

# the config and what reading it imports (in the order they load)
CONFIG = ("cenode.sha512", "cenode.ed25519", "cenode.util", "cenode.appschema", "cenode.config")
# the running node
RUNNING = ("cenode.mqtt", "cenode.link", "cenode.fqueue", "cenode.filters", "cenode.apps",
           "cenode.hal", "cenode.net")


def load(names) -> None:
    """Import modules one at a time with a collection after each, so the next module's code
    fills the holes its loader's garbage left. Imported in a row, the holes stay between the
    modules' code: ~11 KB of a 64 KB heap free, no piece of it over 176 bytes, and a node that
    ran out of heap at boot with 53 KB in use."""
    for name in names:
        __import__(name)
        gc.collect()


def forget(names) -> None:
    """Unload modules for good: out of ``sys.modules`` and out of the ``cenode`` package, whose
    attribute (set by ``from cenode import x``) would otherwise keep each one alive."""
    import cenode

    for name in names:
        sys.modules.pop(name, None)
        if name.startswith("cenode."):
            cenode.__dict__.pop(name[7:], None)


def start(root: str):
    """The node of the firmware in ``root``, ready to run."""
    before = list(sys.modules)
    load(CONFIG)
    from cenode import config

    cfg = config.load(root)
    config = None
    forget([m for m in sys.modules if m not in before])
    gc.collect()
    load(RUNNING)
    from cenode import hal, net
    from cenode.node import Node, _log

    board = hal.Board(cfg["app"].get("pins", {}), cfg["watchdog_ms"])
    wifi = cfg.get("wifi")
    if wifi and not net.wlan_up(wifi["ssid"], wifi["psk"]):
        _log("no Wi-Fi", wifi["ssid"], "yet; the link keeps retrying")
    net.sync_time()
    node = Node(root, cfg, board, net.opener(cfg["broker"], wifi, root + "/certs"))
    _log(cfg["node"], "running firmware", ".".join(str(v) for v in node.version))
    return node
