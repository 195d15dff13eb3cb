"""Transitional: the store is being split into one file per back end."""

from cloud_bridge.citybrain.store.sqlite import *  # noqa: F403
from cloud_bridge.citybrain.store.sqlite import _unique  # noqa: F401
