"""Site files, wrong, hostile and huge, through ``cityedge check-config``: exit 1 with one
``file:line: what`` line per problem, never a traceback, and quickly (findings 6 and 7)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from typer.testing import CliRunner

from cityedge.cli import app
from edge.config.site import load_site
from edge.config.yamlsrc import MAX_ALIAS_VALUES, MAX_DEPTH, MAX_FILE_BYTES, parse_yaml, safe_load
from edge.errors import ConfigError
from tests.abuse.fuzz import FUZZ, fuzz_input

ROOT = Path(__file__).resolve().parents[2]
HEAD = "site: s\ngateway: g\n"


def laughs(levels: int = 9, width: int = 9) -> str:
    """The "billion laughs": each anchor names the previous one ``width`` times."""
    lines = [HEAD + 'a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * width) + "]")
    return "\n".join(lines) + f"\ndescription: *a{levels - 1}\n"


def merges(levels: int = 12) -> str:
    """Merge keys of merge keys: PyYAML's flatten_mapping grows them 9 x 9 x ... pairs."""
    lines = [HEAD + "m0: &m0 {k0: 1, k1: 1, k2: 1, k3: 1, k4: 1, k5: 1, k6: 1, k7: 1, k8: 1}"]
    for i in range(1, levels):
        lines.append(f"m{i}: &m{i} " + "{<<: [" + ",".join([f"*m{i - 1}"] * 9) + "]}")
    return "\n".join(lines) + f"\ndescription: {{<<: *m{levels - 1}}}\n"


# (name, file bytes, line of the problem, words in it): before, the first six were a traceback
# (RecursionError, UnicodeDecodeError, ValueError) or ran for minutes into a MemoryError
HOSTILE = [
    ("nesting 500 deep", (HEAD + "description: " + "[" * 500 + "]" * 500).encode(), 3, f"deeper than {MAX_DEPTH}"),
    ("recursive alias", (HEAD + "description: &a [*a]\n").encode(), 3, "inside its own anchor"),
    ("invalid UTF-8", (HEAD + "description: caf\xe9\n").encode("latin-1"), 3, "not UTF-8 text: byte 0xe9 at column 17"),
    ("5000-digit integer", (HEAD + "shutdown_flush_s: " + "9" * 5000 + "\n").encode(), 3, "an integer of 5000 digits"),
    ("alias bomb, 812 bytes", laughs().encode(), 3, f"add more than {MAX_ALIAS_VALUES} values"),
    ("merge-key bomb", merges().encode(), 4, "'a0'|'m0'|m0"),
    ("merge into itself", (HEAD + "m: &m {<<: *m}\n").encode(), 3, "merges a mapping into itself"),
    ("merge of a scalar", (HEAD + "description: {<<: 1}\n").encode(), 3, "'<<' merges a mapping"),
    ("impossible date", (HEAD + "description: 2023-02-30\n").encode(), 3, "day is out of range"),
    ("control character", (HEAD + "description: a\x01b\n").encode(), 3, "U\\+0001 is not allowed"),
    ("tab indentation", (HEAD + "http:\n\tport: 1\n").encode(), 4, "a tab character"),
    ("python object tag", (HEAD + "description: !!python/object/apply:os.system [id]\n").encode(), 3, "unknown tag '!!python"),
    ("local tag", (HEAD + "description: !env HOME\n").encode(), 3, "unknown tag '!env'"),
    ("NaN", (HEAD + "shutdown_flush_s: .nan\n").encode(), 3, "finite number"),
    ("infinity", (HEAD + "shutdown_flush_s: .inf\n").encode(), 3, "finite number"),
    ("huge key", (HEAD + "k" * 100_000 + ": 1\n").encode(), 3, "a line without 'key: value'"),
    ("too large", (HEAD + "description: " + "x" * MAX_FILE_BYTES + "\n").encode(), None, f"at most {MAX_FILE_BYTES}"),
    ("undefined alias", (HEAD + "description: *nope\n").encode(), 3, "\\*nope refers to an anchor &nope that is not defined"),
    ("duplicate anchor", (HEAD + "a: &x 1\nb: &x 2\n").encode(), 4, "anchor &x is defined twice"),
    ("unclosed list", (HEAD + "description: [a, b\n").encode(), 4, "is not closed"),
    ("missing colon", (HEAD + "http:\n  port 1\n  host: x\n").encode(), 5, "a line without 'key: value'|':' where none may be"),
    ("binary garbage", bytes(range(256)) * 4, 2, "not UTF-8 text: byte 0x80"),
    ("empty", b"", 1, "the file is empty"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("data", "line", "words"), [h[1:] for h in HOSTILE], ids=[h[0] for h in HOSTILE]
)
def test_check_config_names_file_line_and_what(
    tmp_path: Path, data: bytes, line: int | None, words: str
) -> None:
    path = tmp_path / "site.yaml"
    path.write_bytes(data)
    runner = CliRunner()
    result = runner.invoke(app, ["check-config", "--json", str(path)])
    assert isinstance(result.exception, SystemExit), result.exception  # not a traceback
    assert result.exit_code == 1
    problems = json.loads(result.output)["problems"]
    where = f"{path}:{line}: " if line else f"{path}: "
    assert any(p.startswith(where) for p in problems), problems
    assert any(__import__("re").search(words, p) for p in problems), problems
    assert all(len(p) < 400 for p in problems)  # a huge value is never echoed whole
    plain = runner.invoke(app, ["check-config", str(path)])
    assert plain.exit_code == 1 and "Traceback" not in plain.output


def test_aliases_within_the_budget_still_work(tmp_path: Path) -> None:
    """Anchors and merge keys as people use them (a shared block of settings)."""
    text = HEAD + (
        "base: &base {poll_interval_s: 5, unit_id: 1}\n"
        "profiles_dirs: &dirs [profiles]\n"
        "x: {<<: *base, unit_id: 2}\n"
        "y: {<<: [*base, {unit_id: 3, z: 1}]}\n"
        "dirs: *dirs\n"
    )
    doc = parse_yaml(text, "site.yaml")
    assert not doc.problems
    assert doc.data["x"] == {"poll_interval_s": 5, "unit_id": 2}
    assert doc.data["y"] == {"poll_interval_s": 5, "unit_id": 1, "z": 1}  # the first one wins
    assert doc.data["dirs"] == ["profiles"]
    assert doc.lines[("x", "poll_interval_s")] == 3  # a merged key points at its anchor


def test_the_alias_budget_counts_values_not_bytes() -> None:
    """Three levels of nine (some 1700 values walked) pass; five levels (130 000) of the same
    few bytes do not: the budget is what aliases add, whatever the file's size."""
    doc = parse_yaml(laughs(3), "site.yaml")
    assert not doc.problems
    assert len(doc.data["description"]) == 9
    deeper = parse_yaml(laughs(5), "site.yaml")
    assert deeper.problems and "aliases" in deeper.problems[0].message


def test_secrets_file_is_read_with_the_same_limits(tmp_path: Path) -> None:
    (tmp_path / "secrets.yaml").write_text(laughs(), encoding="utf-8")
    (tmp_path / "site.yaml").write_text(HEAD + "description: !secret pw\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"secrets.yaml is not valid YAML: line \d+: aliases"):
        load_site(tmp_path / "site.yaml")
    with pytest.raises(yaml.YAMLError, match="deeper than"):
        safe_load("[" * 1000)
    assert safe_load("pw: ${NOT_EXPANDED}\n") == {"pw": "${NOT_EXPANDED}"}


SEEDS = [p.read_bytes() for p in sorted((ROOT / "examples").glob("*.yaml"))] + [
    laughs(3).encode(),
    (HEAD + "b: &b {x: 1}\nc: {<<: *b, y: !secret pw}\nd: ${HOME:-x}\n").encode(),
]


@FUZZ
@given(fuzz_input(SEEDS, extra=[b"*a0", b"&a0 ", b"!!", b"!secret ", b"${", b"  ", b"- ", b": "]))
def test_fuzz_any_file_gives_a_site_or_located_problems(data: bytes) -> None:
    """Config loading as check-config does it: only ConfigError, every problem a line."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "site.yaml"
        path.write_bytes(data)
        problems = ["(none)"]
        try:
            load_site(path, env={})
        except ConfigError as err:
            problems = err.problems
        assert problems and all(p == "(none)" or p.startswith(str(path)) for p in problems)
