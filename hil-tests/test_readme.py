"""README.md is executable: every command of its ``sh`` blocks runs as written, in order, in a
scratch copy of the checkout (after ``make test``: ``.venv`` and the built models are there),
starting from a shell with nothing activated and none of the README's variables set. What a
command needs that this machine has not got is marked in the README itself (see ``readme.py``).

``CITYEDGE_README_SLOW=1`` also runs the commands the README marks slow (about a CPU minute).
"""

from __future__ import annotations

import os
import signal
import textwrap
import time
from pathlib import Path

import pytest
from readme import (
    Command,
    ReadmeError,
    Runner,
    exported_names,
    machine_lock,
    parse,
    reader_env,
    scratch_checkout,
)

ROOT = Path(__file__).resolve().parents[1]


def runner_for(tmp_path: Path, markdown: str, ready_timeout_s: float = 90.0) -> Runner:
    checkout = scratch_checkout(ROOT, tmp_path / "cityedge")
    env = reader_env(os.environ, exported_names(markdown))
    slow = os.environ.get("CITYEDGE_README_SLOW") == "1"
    return Runner(checkout, env, tmp_path / "runner", ready_timeout_s=ready_timeout_s, slow=slow)


@pytest.mark.timeout(900)  # every README command in turn; a busy machine takes minutes
def test_readme_commands_run_as_written(tmp_path: Path) -> None:
    markdown = (ROOT / "README.md").read_text(encoding="utf-8")
    commands = parse(markdown)
    runner = runner_for(tmp_path, markdown)
    began = time.monotonic()
    with machine_lock():
        failures = runner.run(commands)
    took = time.monotonic() - began
    report = "\n\n".join(map(str, failures))
    assert not failures, f"{len(failures)} README commands failed:\n\n{report}"
    assert all(c.why for c in runner.skipped), [str(c) for c in runner.skipped if not c.why]
    # every example site passes check-config with the environment the README gives it
    checked = {c.words[2] for c, _ in runner.ran if c.words[:2] == ["cityedge", "check-config"]}
    examples = {f"examples/{p.name}" for p in (ROOT / "examples").glob("*.yaml")}
    assert examples <= checked, f"examples the README never checks: {sorted(examples - checked)}"
    # the README is mostly runnable: what is not run is the exception, each with its reason
    assert len(runner.ran) > 3 * len(runner.skipped), [str(c) for c in runner.skipped]
    slowest = sorted(runner.ran, key=lambda r: -r[1])[:5]
    print(f"README: {len(runner.ran)} commands in {took:.0f} s; slowest:")
    for c, s in slowest:
        print(f"  {s:5.1f} s  {c}")


BROKEN = """\
# A README with a typo in a file name

```sh
source .venv/bin/activate
cityedge profiles
cityedge check-config examples/no-such-site.yaml
cityedge schema --check
```
"""


def test_a_broken_command_fails_naming_the_command_and_its_line(tmp_path: Path) -> None:
    failures = runner_for(tmp_path, BROKEN).run(parse(BROKEN))
    assert len(failures) == 1, failures
    text = str(failures[0])
    assert text.startswith("README.md:6: cityedge check-config examples/no-such-site.yaml"), text
    assert "exited with 1" in text and "no-such-site.yaml" in text.split("\n", 1)[1], text


def test_a_command_needs_the_environment_the_readme_states(tmp_path: Path) -> None:
    # without the README's `source .venv/bin/activate` a new shell has no cityedge
    text = "```sh\ncityedge profiles\n```\n"
    failures = runner_for(tmp_path, text).run(parse(text))
    assert [f.command.line for f in failures] == [2]
    assert "exited with 127" in str(failures[0]), str(failures[0])


LONG = """\
<!-- readme-test
long: sh -c "echo ready; sleep 60" => ready
long: sleep 60 => hello
long: sh -c "echo starting; exit 3" => ready
skip: make test => the suite itself
slow: true => one day
-->
```sh
sh -c "echo ready; sleep 60"
sleep 60
sh -c "echo starting; exit 3"
make test
true
echo made > made.txt         # the next commands run in the same folder
test -s made.txt && export MADE=yes
test "$MADE" = yes
ls /dev/ttyUSB9   # needs: a board on /dev/ttyUSB9
# needs: a balena account
false
false
```
"""


def test_long_running_commands_are_checked_then_stopped(tmp_path: Path) -> None:
    runner = runner_for(tmp_path, LONG, ready_timeout_s=3.0)
    began = time.monotonic()
    # as when the suite runs as a background job, which ignores SIGINT (and its children would)
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        failures = runner.run(parse(LONG))
    finally:
        signal.signal(signal.SIGINT, previous)
    lines = sorted((f.command.line, f.what) for f in failures)
    assert [line for line, _ in lines] == [10, 11, 20], lines
    assert "never printed 'hello'" in lines[0][1]
    assert "exited with 3 before it was ready" in lines[1][1]
    assert "exited with 1" in lines[2][1]
    # the first one was ready, kept running through the block, then stopped by Ctrl-C
    assert time.monotonic() - began < 30
    assert {c.line for c in runner.skipped} == {12, 13, 17, 19}
    assert {c.why for c in runner.skipped} == {
        "the suite itself",
        "one day",
        "a board on /dev/ttyUSB9",
        "a balena account",
    }


@pytest.mark.parametrize(
    ("markdown", "message"),
    [
        (
            "<!-- readme-test\nlong: cityedge nothing => x\n-->\n```sh\ncityedge run\n```\n",
            "README.md:2: 'cityedge nothing' matches 0 commands",
        ),
        ("<!-- readme-test\nwait: a => b\n-->\n```sh\na\n```\n", "README.md:2: 'wait: a => b'"),
        ("```sh\ncityedge profiles\n", "README.md:1: code block never closed"),
        ("<!-- readme-test\nskip: a => b\n-->\n\nSome text.\n", "README.md:1: a readme-test"),
    ],
)
def test_wrong_markup_is_an_error_naming_its_line(markdown: str, message: str) -> None:
    with pytest.raises(ReadmeError) as err:
        parse(markdown)
    assert str(err.value).startswith(message), str(err.value)


def test_continuation_lines_make_one_command() -> None:
    text = textwrap.dedent(
        """\
        ```sh
        cityedge provision node -d site/ \\
            --wifi-ssid depot \\
            --self-test 90             # needs: a board
        cityedge profiles # shipped
        ```
        """
    )
    first, second = parse(text)
    assert first == Command(
        "cityedge provision node -d site/ \\\n--wifi-ssid depot \\\n"
        "--self-test 90             # needs: a board",
        2,
        0,
        "needs",
        why="a board",
    )
    assert second.words == ["cityedge", "profiles"] and second.mode == "run"
