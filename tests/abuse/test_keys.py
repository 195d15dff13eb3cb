"""Keys are checked, not only parsed: all-zero, small-order, non-canonical, mixed-order and
published Ed25519 public keys are refused wherever keys are loaded (commands, OTA on the node,
``check-config``), and no example carries a usable fallback key or secret."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import ValidationError

from edge.config.site import load_site
from edge.errors import ConfigError
from edge.mqtt_sink.config import CommandsConfig
from protocols import ed25519, signed
from tests.abuse.forge import FORGED_SIG, SMALL_ORDER, forge
from tests.edge.test_config import GOOD

ROOT = Path(__file__).resolve().parents[2]
NOW = 1_800_000_000
OLD_FALLBACK = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"  # examples/river-station.yaml, before


def _encode(point: tuple[int, int, int, int]) -> bytes:
    x, y, z, _t = point
    zi = pow(z, ed25519.P - 2, ed25519.P)
    x, y = x * zi % ed25519.P, y * zi % ed25519.P
    return (y | (x & 1) << 255).to_bytes(32, "little")


def _mixed_order_key() -> bytes:
    """A real public key plus a point of order 8: no key pair has it."""
    a = ed25519._decode(signed.public_key_raw(Ed25519PrivateKey.generate()))
    t = ed25519._decode(bytes.fromhex(SMALL_ORDER["order 8 a"]))
    assert a is not None and t is not None
    return _encode(ed25519._add(a[0], t[0]))


WEAK = {
    **{name: bytes.fromhex(h) for name, h in SMALL_ORDER.items()},
    "not a point": bytes.fromhex("02" + "00" * 31),
    "non-canonical y (y + p of a real point)": bytes.fromhex("ff" * 31 + "7f"),
    "RFC 8032 test 1": bytes.fromhex(
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
    ),
    "seed of zero bytes": signed.public_key_raw(Ed25519PrivateKey.from_private_bytes(bytes(32))),
    "seed of 0x41 bytes": signed.public_key_raw(Ed25519PrivateKey.from_private_bytes(b"A" * 32)),
}


@pytest.mark.parametrize("raw", WEAK.values(), ids=WEAK.keys())
def test_weak_public_keys_are_refused_with_the_rule(raw: bytes) -> None:
    with pytest.raises(ed25519.WeakKey, match="prime-order subgroup"):
        ed25519.check_public_key(raw)
    with pytest.raises(ValueError, match="prime-order subgroup"):
        signed.public_key_from_raw(raw)
    with pytest.raises(ValidationError, match=r"key 'ops' is refused: .*prime-order subgroup"):
        CommandsConfig(keys={"ops": signed.b64url(raw)})


def test_a_mixed_order_key_is_refused() -> None:
    raw = _mixed_order_key()
    assert ed25519.key_problem(raw) == (
        "outside the prime-order subgroup (no key pair has such a public key)"
    )


def test_every_small_order_key_really_lets_anyone_forge_without_the_checks() -> None:
    """The premise: OpenSSL's verifier alone accepts R = identity, S = 0 for each of them."""
    for h in SMALL_ORDER.values():
        key = bytes.fromhex(h)
        data = forge(b'{"x":1}', key=key, kid="ops", expires_at=NOW + 60)
        assert signed.unb64url(json.loads(data)["sig"]) == FORGED_SIG


@pytest.mark.parametrize("name", SMALL_ORDER)
def test_a_forged_envelope_is_refused_even_when_a_weak_key_slipped_in(name: str) -> None:
    key = bytes.fromhex(SMALL_ORDER[name])
    data = forge(b'{"x":1}', key=key, kid="ops", expires_at=NOW + 60)
    with pytest.raises(signed.SignatureRefused) as info:
        signed.verify(
            data,
            purpose="command",
            keys={"ops": Ed25519PublicKey.from_public_bytes(key)},
            now=NOW,
        )
    assert info.value.reason is signed.Refusal.UNKNOWN_KEY
    assert "small-order" in str(info.value) or "all zero" in str(info.value)


def test_real_keys_pass_and_still_verify() -> None:
    for _ in range(20):
        private = Ed25519PrivateKey.generate()
        raw = signed.public_key_raw(private)
        assert ed25519.key_problem(raw) is None
        public = signed.public_key_from_raw(raw)
        data = signed.sign(b"{}", purpose="command", kid="ops", key=private, expires_at=NOW + 60)
        assert signed.verify(data, purpose="command", keys={"ops": public}, now=NOW).body == b"{}"
        assert CommandsConfig(keys={"ops": signed.b64url(raw)}).keys


def test_signatures_no_honest_signer_makes_are_refused_before_verifying() -> None:
    good = Ed25519PrivateKey.generate().sign(b"m")
    assert ed25519.signature_problem(good) is None
    big_s = good[:32] + (int.from_bytes(good[32:], "little") + ed25519.L).to_bytes(32, "little")
    assert ed25519.signature_problem(big_s) == "S is not below the group order"
    assert ed25519.signature_problem(FORGED_SIG) == "R is a small-order point"
    assert ed25519.signature_problem(b"\xff" * 31 + b"\x7f" + bytes(32)) == (
        "R is not a canonically encoded point"
    )


def _site(tmp_path: Path, key: str) -> Path:
    """A good site file whose mqtt sink trusts ``key`` for commands (on its last line)."""
    path = tmp_path / "site.yaml"
    text = GOOD.replace("${BROKER_PASSWORD}", "pw")
    path.write_text(text + f'    commands: {{keys: {{ops-2026: "{key}"}}}}\n', encoding="utf-8")
    return path


def test_check_config_refuses_the_old_fallback_key_naming_the_line_and_the_rule(
    tmp_path: Path,
) -> None:
    with pytest.raises(ConfigError) as info:
        load_site(_site(tmp_path, OLD_FALLBACK))
    (problem,) = info.value.problems
    line = GOOD.count("\n") + 1
    assert problem.startswith(f"{tmp_path / 'site.yaml'}:{line}: sinks[0].commands.keys")
    assert "all zero" in problem and "prime-order subgroup" in problem
    real = signed.b64url(signed.public_key_raw(Ed25519PrivateKey.generate()))
    assert load_site(_site(tmp_path, real)).config.sinks


_FALLBACK = re.compile(r"\$\{([A-Z0-9_]+):-[^}]*\}")
_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|(^|_)PW$|PSK")


@pytest.mark.parametrize(
    "path",
    [*sorted((ROOT / "examples").glob("*.yaml")), ROOT / "sim/demo/site.yaml"],
    ids=lambda p: p.name,
)
def test_no_shipped_config_carries_a_fallback_secret(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    secrets_with_fallback = [
        m.group(0) for m in _FALLBACK.finditer(text) if _SECRET_NAME.search(m.group(1))
    ]
    assert secrets_with_fallback == []
    assert OLD_FALLBACK not in text


def test_the_river_station_example_needs_a_real_command_key(tmp_path: Path) -> None:
    path = ROOT / "examples" / "river-station.yaml"
    env = {"CITY_BRAIN_USER": "gw", "CITY_BRAIN_PASSWORD": "pw"}
    with pytest.raises(ConfigError, match="CITY_BRAIN_COMMAND_KEY"):
        load_site(path, env=env)
    with pytest.raises(ConfigError, match="all zero"):
        load_site(path, env={**env, "CITY_BRAIN_COMMAND_KEY": OLD_FALLBACK})
    real = signed.b64url(signed.public_key_raw(Ed25519PrivateKey.generate()))
    load_site(path, env={**env, "CITY_BRAIN_COMMAND_KEY": real})
