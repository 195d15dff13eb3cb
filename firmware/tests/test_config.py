"""config.json checks: defaults filled in, every problem named."""

from t import eq, raises, tmpdir, vectors, write

from cenode import config

GOOD = {"site": "s", "node": "n", "kind": "bin-fill", "broker": {"host": "h", "port": 8883}}


def test_defaults() -> None:
    c = config.check(dict(GOOD, broker=dict(GOOD["broker"])))
    eq(c["broker"]["tls"], True)
    eq(c["report_interval_s"], 60)
    eq(c["trusted_keys"], {})


def test_problems_are_named() -> None:
    cases = [
        ({k: v for k, v in GOOD.items() if k != "node"}, "node is missing"),
        (dict(GOOD, broker={"host": "h"}), "broker.port is missing"),
        (dict(GOOD, broker={"host": "h", "port": "x"}), "broker.port must be int"),
        (dict(GOOD, broker={"host": "h", "port": 0}), "broker.port must be 1-65535"),
        (dict(GOOD, report_interval_s=0), "report_interval_s"),
        (dict(GOOD, trusted_keys={"k": "AAAA"}), "trusted_keys.k"),
    ]
    for doc, words in cases:
        with raises(config.ConfigError) as r:
            config.check(doc)
        eq(words in str(r.value), True, words + " in " + str(r.value))


def test_load() -> None:
    root = tmpdir()
    with raises(config.ConfigError):
        config.load(root)
    write(root + "/config.json", "{nope")
    with raises(config.ConfigError):
        config.load(root)
    write(root + "/config.json", '{"site": "s", "node": "n", "kind": "water", "broker": {"host": "h", "port": 1}}')
    eq(config.load(root)["kind"], "water")


def _b64url(raw: bytes) -> str:
    import binascii

    text = binascii.b2a_base64(raw).decode().strip().rstrip("=")
    return text.replace("+", "-").replace("/", "_")


def test_a_small_order_key_is_refused() -> None:
    for v in vectors("signed.json")["small_order"]:
        with raises(config.ConfigError) as r:
            config.check(dict(GOOD, trusted_keys={"ops-1": _b64url(bytes.fromhex(v["key"]))}))
        eq("trusted_keys.ops-1 is refused" in str(r.value), True, v["name"])
    real = vectors("signed.json")["keys"]
    eq(len(config.check(dict(GOOD, trusted_keys=real))["trusted_keys"]), 1)
