"""Commands signed by the node's gateway under the site's delegation, against the shared table
(``protocols/vectors/delegation.json``; the gateway's side checks the same one)."""

from t import eq, raises, vectors

from cenode import delegation, ed25519, signed
from cenode.util import b64url_decode


def _table():
    doc = vectors("delegation.json")
    keys = {k: b64url_decode(v) for k, v in doc["site_keys"].items()}
    return doc, keys


def _check(cache, case, doc, keys) -> tuple:
    env = signed.parse(case["data"].encode())
    use = cache.key_for(env, keys, doc["site"], case["gateway"], doc["now"])
    return signed.verify_doc(env, "command", use, doc["now"])


def test_delegated_command_table() -> None:
    doc, keys = _table()
    for case in doc["commands"]:
        cache = delegation.Keys()
        if case["refusal"] is None:
            body = _check(cache, case, doc, keys)[0]
            eq(body, b'{"node":"gate-1","action":"open"}', case["name"])
            continue
        with raises(signed.Refused) as r:
            _check(cache, case, doc, keys)
        eq(r.value.reason, case["refusal"], case["name"])
        eq(len(cache.keys), 0 if case["refusal"] != "bad-signature" else 1, case["name"])


class _Counting:
    def __init__(self) -> None:
        self.calls = 0
        self.real = ed25519.verify

    def __call__(self, *args) -> bool:
        self.calls += 1
        return self.real(*args)


def test_a_delegation_is_verified_once_then_kept_by_key_id() -> None:
    doc, keys = _table()
    by_name = {c["name"]: c for c in doc["commands"]}
    counting = _Counting()
    ed25519.verify = counting
    try:
        cache = delegation.Keys()
        _check(cache, by_name["its gateway's key"], doc, keys)
        eq(counting.calls, 2, "the delegation, then the command")
        with raises(signed.Refused) as r:  # the same key id, signed by someone else
            _check(cache, by_name["command forged under a good delegation"], doc, keys)
        eq(r.value.reason, "bad-signature")
        eq(counting.calls, 3, "the kept key: only the command is verified")
    finally:
        ed25519.verify = counting.real


def test_a_kept_key_ends_with_its_delegation() -> None:
    doc, keys = _table()
    case = doc["commands"][0]
    cache = delegation.Keys()
    _check(cache, case, doc, keys)
    kid = list(cache.keys)[0]
    cache.keys[kid] = (cache.keys[kid][0], doc["now"])  # as if it expired now
    with raises(signed.Refused) as r:
        _check(cache, {"data": '{"kid": "' + kid + '"}', "gateway": "gw-a"}, doc, keys)
    eq(r.value.reason, "bad-delegation")
    eq(kid in cache.keys, False)


def test_the_cache_is_bounded() -> None:
    cache = delegation.Keys()
    for i in range(delegation.CACHED + 3):
        cache.keys["k" + str(i)] = (b"", 100 + i)
    doc, keys = _table()
    _check(cache, doc["commands"][0], doc, keys)
    eq(len(cache.keys), delegation.CACHED)
