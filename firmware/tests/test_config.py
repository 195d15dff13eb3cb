"""config.json checks: defaults filled in, every problem named."""

from t import eq, raises, tmpdir, vectors, write

from cenode import config

GOOD = {"site": "s", "node": "n", "kind": "bin-fill", "broker": {"host": "h", "port": 8883}}


def test_defaults() -> None:
    c = config.check(dict(GOOD, broker=dict(GOOD["broker"])))
    eq(c["broker"]["tls"], True)
    eq(c["report_interval_s"], 60)
    eq(c["trusted_keys"], {})
    eq(c["gateway"], None)


def test_problems_are_named() -> None:
    cases = [
        ({k: v for k, v in GOOD.items() if k != "node"}, "node is missing"),
        (dict(GOOD, broker={"host": "h"}), "broker.port is missing"),
        (dict(GOOD, broker={"host": "h", "port": "x"}), "broker.port must be int"),
        (dict(GOOD, broker={"host": "h", "port": 0}), "broker.port must be 1-65535"),
        (dict(GOOD, report_interval_s=0), "report_interval_s"),
        (dict(GOOD, trusted_keys={"k": "AAAA"}), "trusted_keys.k"),
        (dict(GOOD, gateway=7), "gateway must be the name"),
        (dict(GOOD, gateway=""), "gateway must be the name"),
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


def test_app_settings_are_checked_against_the_apps_schema() -> None:
    c = config.check(dict(GOOD, app={"full_mm": 200, "pins": {"echo": 19}}))
    eq(c["app"]["empty_mm"], 1200)
    eq(c["app"]["full_mm"], 200)
    eq(c["app"]["pins"], {"echo": 19})
    cases = [
        ({"full_mm": "abc"}, "app.full_mm must be a number"),
        ({"fullmm": 200}, "app.fullmm is not a bin-fill setting"),
        ({"full_mm": 5}, "app.full_mm must be 20-4900 mm"),
        ({"pings": 2.5}, "app.pings must be an integer"),
        ({"pings": True}, "app.pings must be an integer"),
        ({"empty_mm": 300, "full_mm": 400}, "app.empty_mm must be larger than app.full_mm"),
        ({"pins": {"echo": 99}}, "app.pins.echo must be 0-48"),
        ({"pins": {"relay": 4}}, "app.pins.relay is not a pin of bin-fill"),
        ("x", "app must be an object"),
    ]
    for app, words in cases:
        with raises(config.ConfigError) as r:
            config.check(dict(GOOD, app=app))
        eq(words in str(r.value), True, words + " in " + str(r.value))
    water = dict(GOOD, kind="water")
    eq(config.check(dict(water))["app"]["calibration"]["ph"], [[1500, 7.0], [2030, 4.0]])
    for app, words in [
        ({"calibration": {"ph": [[1500, 7.0]]}}, "app.calibration.ph must be two"),
        ({"calibration": {"ph": [[1500, 7.0], [1500, 4.0]]}}, "different mV"),
        ({"calibration": {"ph": [[1500, 7.0], [2030, 15]]}}, "app.calibration.ph[1][1] must be 0-14 pH"),
        ({"calibration": {"redox": []}}, "redox is not a probe"),
    ]:
        with raises(config.ConfigError) as r:
            config.check(dict(water, app=app))
        eq(words in str(r.value), True, words + " in " + str(r.value))
    with raises(config.ConfigError) as r:
        config.check(dict(GOOD, kind="toaster"))
    eq("kind toaster is not one of" in str(r.value), True)


def test_the_apps_defaults_are_the_schemas() -> None:
    from fakes import Board

    from cenode import apps
    from cenode.appschema import SETTINGS

    b = apps.make("bin-fill", Board(), {})
    s = SETTINGS["bin-fill"]
    eq((b.empty_mm, b.full_mm, b.pings), (s["empty_mm"]["default"], s["full_mm"]["default"], s["pings"]["default"]))
    eq(apps.make("water", Board(), {}).samples, SETTINGS["water"]["samples"]["default"])
    eq(apps.GateRelay(Board(), {}).max_pulse_ms, SETTINGS["gate-relay"]["max_pulse_ms"]["default"])
