"""``config.apply`` with wrong, hostile and huge arguments: refused with ``bad-args`` before or
while parsing, within the limits of any site file, and parsed off the event loop (a 720-byte
alias bomb blocked the gateway's loop for 8.3 s, finding 6)."""

from __future__ import annotations

import asyncio
import math
import tempfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloud_bridge.uplink.commands import CommandError
from edge.config.yamlsrc import MAX_FILE_BYTES
from edge.remote_config import RemoteConfig
from protocols.commands import CommandFailure, CommandRequest
from tests.abuse.fuzz import FUZZ, fuzz_input, run
from tests.abuse.test_config_files import HEAD, laughs

GOOD = HEAD + "description: first\n"


def request(**args: object) -> CommandRequest:
    return CommandRequest(id="r-1", site="s", gateway="g", command="config.apply", args=args)


def remote(folder: Path) -> RemoteConfig:
    path = folder / "site.yaml"
    path.write_text(GOOD, encoding="utf-8")
    return RemoteConfig(path)


BAD_ARGS = [
    ("no yaml", {}, "must hold a whole site file"),
    ("yaml not text", {"yaml": ["site: s"]}, "must hold a whole site file"),
    ("blank", {"yaml": "  \n"}, "must hold a whole site file"),
    ("lone surrogate", {"yaml": GOOD + "x: \udc80\n"}, "lone surrogate"),  # write_text raised
    ("too large", {"yaml": GOOD + "#" * MAX_FILE_BYTES}, f"at most {MAX_FILE_BYTES}"),
    ("alias bomb", {"yaml": laughs(8)}, "add more than"),
    ("nested 500 deep", {"yaml": GOOD.replace("first", "[" * 500 + "]" * 500)}, "deeper than"),
    ("recursive alias", {"yaml": HEAD + "description: &a [*a]\n"}, "inside its own anchor"),
    ("5000 digits", {"yaml": HEAD + "shutdown_flush_s: " + "9" * 5000}, "5000 digits"),
    ("rollback as text", {"yaml": GOOD, "rollback_after_s": "30"}, "rollback_after_s"),
    ("rollback nan", {"yaml": GOOD, "rollback_after_s": math.nan}, "rollback_after_s"),
    ("rollback true", {"yaml": GOOD, "rollback_after_s": True}, "rollback_after_s"),
    ("rollback a list", {"yaml": GOOD, "rollback_after_s": [1]}, "rollback_after_s"),
    ("rollback 0", {"yaml": GOOD, "rollback_after_s": 0}, "rollback_after_s"),
    (
        "10 000 problems",
        {"yaml": HEAD + "".join(f"k{i}: 1\n" for i in range(10_000))},
        "and 9980 more",
    ),
]


@pytest.mark.parametrize(("args", "words"), [b[1:] for b in BAD_ARGS], ids=[b[0] for b in BAD_ARGS])
async def test_bad_arguments_are_refused_and_nothing_changes(
    tmp_path: Path, args: dict[str, object], words: str
) -> None:
    rc = remote(tmp_path)
    with pytest.raises(CommandError) as caught:
        await rc.apply(request(**args))
    assert caught.value.reason is CommandFailure.BAD_ARGS
    message = str(caught.value)
    assert words in message and len(message) < 5000
    assert unchanged(tmp_path)


def unchanged(folder: Path) -> bool:
    """The site file as it was, and nothing else (no candidate, marker or previous file)."""
    files = sorted(p.name for p in folder.iterdir())
    return files == ["site.yaml"] and (folder / "site.yaml").read_text(encoding="utf-8") == GOOD


async def test_the_file_is_parsed_off_the_event_loop(tmp_path: Path) -> None:
    """Other tasks run while a (slow, here 30 KB of list items) file is validated; before, the
    whole validation ran in one step of the loop."""
    rc = remote(tmp_path)
    text = HEAD + "profiles_dirs:\n" + "- p\n" * 7000 + "bad_key: 1\n"
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.001)
            ticks += 1

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)  # the ticker is running
    start = ticks
    with pytest.raises(CommandError, match="bad_key"):
        await rc.apply(request(yaml=text))
    task.cancel()
    assert ticks > start


async def test_one_apply_at_a_time(tmp_path: Path) -> None:
    rc = remote(tmp_path)
    text = HEAD + "profiles_dirs:\n" + "- p\n" * 7000
    first = asyncio.create_task(rc.apply(request(yaml=text)))
    await asyncio.sleep(0.01)  # the first one is parsing in its thread
    with pytest.raises(CommandError, match=r"another config\.apply is under way"):
        await rc.apply(request(yaml=GOOD))
    assert (await first)["applied"] is True
    rc.stop()


async def test_config_get_reads_the_file_off_the_loop_too(tmp_path: Path) -> None:
    rc = remote(tmp_path)
    got = await rc.get(request())
    assert got["config"]["description"] == "first"


@FUZZ
@given(
    fuzz_input(
        [GOOD.encode(), laughs(3).encode(), (HEAD + "b: &b {x: 1}\nc: {<<: *b}\n").encode()]
    ),
    st.one_of(st.none(), st.floats(), st.integers(), st.text(max_size=5)),
)
def test_fuzz_config_apply_refuses_with_bad_args_or_applies(data: bytes, rollback: object) -> None:
    """The handler's parse (not only the YAML reader): any text, any rollback value, gives a
    reply (CommandError) or an applied file, never another exception."""
    args: dict[str, object] = {"yaml": data.decode("utf-8", "surrogateescape")}
    if rollback is not None:
        args["rollback_after_s"] = rollback

    async def one() -> None:
        with tempfile.TemporaryDirectory() as folder:
            rc = remote(Path(folder))
            refused: CommandFailure | None = None
            try:
                result = await rc.apply(request(**args))
            except CommandError as err:
                refused = err.reason
            else:
                assert result["applied"] is True
            rc.stop()
            assert refused in (None, CommandFailure.BAD_ARGS, CommandFailure.FAILED)

    run(one())
