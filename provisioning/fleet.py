"""Gateways join a balena fleet (balena-sdk): register a device in the fleet and keep its uuid and
device API key with the gateway's provisioning record.

The SDK talks to ``https://api.<balena_host>/``; ``api_url`` points it elsewhere (an on-premises
openBalena, or the local stand-in the tests use, since the balena API cannot be reached from the
test machines). Endpoints used: ``GET /actor/v1/whoami``, ``GET /v7/application`` (by slug),
``POST /api-key/v1/`` (a provisioning key) and ``POST /device/register``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from provisioning.errors import ProvisionInputError, ProvisionRunError


@dataclass(frozen=True)
class FleetDevice:
    fleet: str
    uuid: str
    id: int
    api_key: str


def client(api_url: str | None = None, balena_host: str = "balena-cloud.com") -> Any:
    try:
        from balena import Balena, __version__
        from balena.auth import Auth
        from balena.models import Models
        from balena.pine import PineClient
    except ModuleNotFoundError as err:
        raise ProvisionRunError(
            "balena-sdk is not installed", hint="pip install 'cityedge[provisioning]'"
        ) from err
    b = Balena({"balena_host": balena_host, "data_directory": False})
    if api_url:
        url = api_url if api_url.endswith("/") else api_url + "/"
        b.settings.set("api_endpoint", url)
        b.settings.set("pine_endpoint", url + "v7/")
        # the SDK reads the endpoint when its clients are made: make them again
        b.pine = PineClient(b.settings, __version__)
        b.auth = Auth(b.pine, b.settings)
        b.models = Models(b.pine, b.settings)
    return b


def join_fleet(fleet: str, token: str, api_url: str | None = None) -> FleetDevice:
    """Register a new device in ``fleet`` (its slug, e.g. ``cityedge/riverside-gateways``)."""
    from balena import exceptions

    b = client(api_url)
    b.auth.login_with_token(token)
    uuid = b.models.device.generate_uuid()
    try:
        reg = b.models.device.register(fleet, uuid)
    except exceptions.ApplicationNotFound as err:
        raise ProvisionInputError(
            f"no balena fleet {fleet!r} for this token",
            hint="use the fleet's slug (organization/fleet) and a token of its organization",
        ) from err
    except exceptions.NotLoggedIn as err:
        raise ProvisionRunError(
            f"the balena API at {b.settings.get('api_endpoint')} refused the token or cannot be reached",
            hint="check the token (balena dashboard > Preferences > Access tokens) and the network",
        ) from err
    except exceptions.BalenaException as err:
        raise ProvisionRunError(f"balena refused the registration: {err}") from err
    if not isinstance(reg, dict) or "uuid" not in reg:
        raise ProvisionRunError(f"unexpected answer from balena: {reg!r}")
    return FleetDevice(fleet, str(reg["uuid"]), int(reg.get("id", 0)), str(reg.get("api_key", "")))
