"""One exception tree per room, drawn in its package docstring: every exception class a room
defines grows from the room's root (found by importing every module of the room)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

from cloud_bridge.errors import BridgeError, PermanentBridgeError, TransientBridgeError
from edge.errors import EdgeError, PermanentError, TransientError
from models.errors import BuildError
from protocols.errors import HintedError, ProtocolError
from provisioning.errors import ProvisionError

ROOTS: dict[str, tuple[type[BaseException], ...]] = {
    "edge": (EdgeError,),
    "cloud_bridge": (BridgeError,),
    # the codecs' tree, and the base of every room's tree for people (given with the codes)
    "protocols": (ProtocolError, HintedError),
    "provisioning": (ProvisionError,),
    "models": (BuildError,),
    "cityedge": (HintedError,),
}
# signals, not errors (edge's docstring says why)
OUTSIDE = {"edge.channel.ChannelClosed", "edge.config.yamlsrc.TooLarge"}
SKIP = ("models.train",)  # torch; defines no exception


def defined_in(room: str) -> list[type[BaseException]]:
    package = importlib.import_module(room)
    found: list[type[BaseException]] = []
    for info in pkgutil.walk_packages(package.__path__, f"{room}."):
        if info.name.endswith(".__main__") or info.name.startswith(SKIP):
            continue
        module = importlib.import_module(info.name)
        found += [
            obj
            for obj in vars(module).values()
            if inspect.isclass(obj)
            and issubclass(obj, BaseException)
            and obj.__module__ == info.name
        ]
    return found


@pytest.mark.parametrize("room", sorted(ROOTS))
def test_every_exception_of_a_room_grows_from_its_root(room: str) -> None:
    classes = defined_in(room)
    assert classes
    strays = [
        f"{c.__module__}.{c.__qualname__}"
        for c in classes
        if not issubclass(c, ROOTS[room]) and f"{c.__module__}.{c.__qualname__}" not in OUTSIDE
    ]
    assert strays == []
    doc = importlib.import_module(room).__doc__ or ""
    assert all(root.__name__ in doc for root in ROOTS[room])  # the tree is drawn


def test_transient_and_permanent_are_different_types() -> None:
    assert not issubclass(TransientError, PermanentError)
    assert not issubclass(PermanentError, TransientError)
    assert not issubclass(TransientBridgeError, PermanentBridgeError)
    assert not issubclass(PermanentBridgeError, TransientBridgeError)
