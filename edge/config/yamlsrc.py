"""Read a YAML file keeping the line of every key and item, with ``${ENV}`` and ``!secret``.

References in string values:

- ``${NAME}``            the environment variable NAME; an error if it is not set
- ``${NAME:-default}``   NAME, or ``default`` when NAME is unset or empty
- ``$${``                a literal ``${``
- ``!secret name``       the value of ``name`` in ``secrets.yaml`` next to the file (a YAML
                         mapping of names to strings; keep it out of version control)

Every problem found (syntax, duplicate keys, undefined variables, missing secrets) is collected
with its file and line, so one run lists them all.

A file is outside input (``config.apply`` brings one over the network), so reading it is
bounded before anything large is built:

- at most :data:`MAX_FILE_BYTES`, and UTF-8 (a bad byte is reported with its line);
- nesting at most :data:`MAX_DEPTH` levels, refused while the parser composes (PyYAML's composer
  recurses once per level: 500 levels were a ``RecursionError``);
- aliases (``*name``) and merge keys (``<<``) may add at most :data:`MAX_ALIAS_VALUES` values to
  what the file itself holds: an 812-byte "billion laughs" file is refused after that many, not
  expanded (it took 72 s and 5.9 GB before); an alias inside its own anchor is a problem;
- a scalar that cannot be a value (an integer of more than 4300 digits, 2023-02-30) is a
  problem at its line.

PyYAML's words are turned into plain ones ("a tab character: YAML indents with spaces") where
they reach a person.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import yaml
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from protocols.limits import shown

Loc = tuple[str | int, ...]

_REF = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_STR_TAG = "tag:yaml.org,2002:str"
_INT_TAG = "tag:yaml.org,2002:int"
_MERGE_TAG = "tag:yaml.org,2002:merge"
SECRET_TAG = "!secret"  # noqa: S105 - a YAML tag name, not a secret
SECRETS_FILE = "secrets.yaml"

#: Largest file read: the examples are 1-3 KB; PyYAML reads some 100 KB a second, so this is
#: also what bounds the time a file can take.
MAX_FILE_BYTES = 256 * 1024
#: Deepest nesting of mappings and lists (a site file needs about ten).
MAX_DEPTH = 64
#: Values that aliases and merge keys may add to the file's own (a few hundred is generous).
MAX_ALIAS_VALUES = 10_000

#: PyYAML's words for common mistakes (a pattern), and what to tell a person instead.
_PLAIN: Final = [
    (re.compile(pattern), words)
    for pattern, words in (
        (r"found character '\\t' that cannot start any token", "a tab character: YAML indents with spaces only"),
        (r"mapping values are not allowed here", "a ':' where none may be: quote the value, or fix the indentation"),
        (r"could not find expected ':'", "a line without 'key: value' (a missing ':', or a wrongly indented line)"),
        (r"but found '<block mapping start>'", "this line is indented differently from the lines above it"),
        (r"end>, but found '(\?|-|<block sequence start>)'", "a list item and a key at the same indentation"),
        (r"or '([\]}])', but got '<stream end>'", "a [ or {{ is not closed: the file ended before its '{0}'"),
        (r"expected ',' or '([\]}])', but got", "expected ',' or '{0}' in a [ ] list or {{ }} mapping"),
        (r"found unexpected end of stream", "a quoted string is not closed"),
        (r"found undefined alias '(.*)'", "*{0} refers to an anchor &{0} that is not defined before it"),
        (r"found duplicate anchor '(.*)'", "anchor &{0} is defined twice"),
    )
]  # fmt: skip


def _unknown_tag(tag: str) -> str:
    short = tag.replace("tag:yaml.org,2002:", "!!", 1)
    return f"unknown tag {shown(short, 60)}; the only tag is {SECRET_TAG}"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a file, located by its path in the data and (when known) a line."""

    file: str
    line: int | None
    loc: Loc
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        path = format_loc(self.loc)
        return f"{where}: {path}: {self.message}" if path else f"{where}: {self.message}"


def format_loc(loc: Loc) -> str:
    """``('sources', 1, 'points', 3, 'dtype')`` → ``sources[1].points[3].dtype``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


@dataclass
class YamlDocument:
    """Data read from a YAML file, with the line of each location and what was sensitive."""

    file: str
    data: Any
    lines: dict[Loc, int] = field(default_factory=dict)
    sensitive: set[Loc] = field(default_factory=set)
    problems: list[Problem] = field(default_factory=list)

    def line_of(self, loc: Loc) -> int | None:
        """Line of ``loc``, or of its nearest ancestor that has one."""
        for n in range(len(loc), -1, -1):
            line = self.lines.get(tuple(loc[:n]))
            if line is not None:
                return line
        return None


def plain_words(problem: str, context: str | None = None) -> str:
    """PyYAML's description of a problem (and of its context), in words for a person."""
    for said in (problem, context or ""):
        for pattern, text in _PLAIN:
            m = pattern.search(said)
            if m:
                return text.format(*m.groups())
    return problem


class TooLarge(yaml.MarkedYAMLError):
    """The file goes beyond a limit (depth, alias expansion): reading stops at once."""


class BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing nesting deeper than :data:`MAX_DEPTH` as it composes, and
    counting the nodes it composed (aliases are not copies: they are counted when walked)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.depth = 0
        self.composed = 0

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        if self.check_event(AliasEvent):
            return super().compose_node(parent, index)
        self.composed += 1
        if self.depth >= MAX_DEPTH:
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise TooLarge(
                problem=f"nested deeper than {MAX_DEPTH} levels; a site file needs far fewer",
                problem_mark=event.start_mark,
            )
        self.depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def safe_load(text: str) -> Any:
    """``yaml.safe_load`` within the same limits as a site file, without ``${...}`` and
    ``!secret`` (for side files such as ``secrets.yaml``); raises :class:`yaml.YAMLError`
    naming the first problem and its line."""
    doc = parse_yaml(text, "<text>", env={}, references=False)
    if doc.problems:
        first = doc.problems[0]
        raise yaml.YAMLError(f"line {first.line}: {first.message}" if first.line else first.message)
    return doc.data


class _Reader:
    def __init__(
        self, doc: YamlDocument, env: Mapping[str, str], secrets_path: Path | None
    ) -> None:
        self.doc = doc
        self.env = env
        self.secrets_path = secrets_path
        self._secrets: dict[str, str] | None = None
        self.loader: BoundedLoader | None = None
        self.references = True
        self.walked = 0
        self._open: set[int] = set()  # collections being walked: an alias to one is a cycle
        self._merged: dict[int, list[tuple[Node, Node]]] = {}

    def problem(self, loc: Loc, node: Node, message: str) -> None:
        self.doc.problems.append(Problem(self.doc.file, node.start_mark.line + 1, loc, message))

    def secrets(self, loc: Loc, node: Node) -> dict[str, str]:
        if self._secrets is not None:
            return self._secrets
        self._secrets = {}
        if self.secrets_path is None or not self.secrets_path.is_file():
            where = self.secrets_path or SECRETS_FILE
            self.problem(loc, node, f"!secret needs {where}, which does not exist; create it")
            return self._secrets
        try:
            loaded = safe_load(self.secrets_path.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError, OSError) as err:
            self.problem(loc, node, f"{self.secrets_path} is not valid YAML: {err}")
            return self._secrets
        if not isinstance(loaded, dict):
            self.problem(loc, node, f"{self.secrets_path} must be a mapping of names to values")
            return self._secrets
        self._secrets = {str(k): str(v) for k, v in loaded.items()}
        return self._secrets

    def substitute(self, loc: Loc, node: Node, text: str) -> str:
        if "$" not in text or not self.references:
            return text

        def repl(m: re.Match[str]) -> str:
            if m.group(0) == "$${":
                return "${"
            name, default = m.group(1), m.group(2)
            value = self.env.get(name)
            if value is None or (value == "" and default is not None):
                if default is not None:
                    return default
                self.problem(
                    loc,
                    node,
                    f"environment variable {name} is not set; export it, or give a default "
                    f"with ${{{name}:-value}}",
                )
                return ""
            self.doc.sensitive.add(loc)
            return value

        return _REF.sub(repl, text)

    def _count(self, node: Node, loc: Loc) -> None:
        """One more value walked; stop when aliases went beyond their budget or too deep."""
        assert self.loader is not None
        self.walked += 1
        if self.walked > self.loader.composed + MAX_ALIAS_VALUES:
            raise TooLarge(
                problem=f"aliases (*name) and merge keys (<<) add more than {MAX_ALIAS_VALUES} "
                "values to this file; write the values out, or use fewer nested aliases",
                problem_mark=node.start_mark,
            )
        if len(loc) > MAX_DEPTH:
            raise TooLarge(
                problem=f"aliases nest values deeper than {MAX_DEPTH} levels",
                problem_mark=node.start_mark,
            )

    def _pairs(self, node: MappingNode, loc: Loc) -> tuple[list[tuple[Node, Node]], int]:
        """The key/value nodes of a mapping with merge keys (``<<``) resolved: merged pairs
        first (the first mapping named wins), then the mapping's own; and how many merged.
        Merged keys are kept once each, and each mapping is resolved once, so merges of merges
        cannot grow the way PyYAML's ``flatten_mapping`` does (9 x 9 x ... pairs)."""
        own: list[tuple[Node, Node]] = []
        sources: list[MappingNode] = []
        for key_node, value_node in node.value:
            if key_node.tag != _MERGE_TAG:
                own.append((key_node, value_node))
                continue
            items = value_node.value if isinstance(value_node, SequenceNode) else [value_node]
            for item in items:
                if not isinstance(item, MappingNode):
                    self.problem(loc, item, "'<<' merges a mapping or a list of mappings")
                    continue
                sources.append(item)
        if not sources:
            return own, 0
        merged: dict[object, tuple[Node, Node]] = {}
        for source in reversed(sources):  # later sources first: the first one named wins
            if id(source) in self._open:
                self.problem(loc, source, "a merge key (<<) merges a mapping into itself")
                continue
            if id(source) not in self._merged:
                self._open.add(id(source))
                try:
                    pairs, _ = self._pairs(source, loc)
                finally:
                    self._open.discard(id(source))
                self._merged[id(source)] = pairs
            for key_node, value_node in self._merged[id(source)]:
                self._count(value_node, loc)
                merged[_key_id(key_node)] = (key_node, value_node)
        return [*merged.values(), *own], len(merged)

    def walk(self, node: Node, loc: Loc) -> Any:
        assert self.loader is not None
        self._count(node, loc)
        self.doc.lines[loc] = node.start_mark.line + 1
        if isinstance(node, MappingNode | SequenceNode):
            if node.tag not in self.loader_tags():  # !!python/object/apply: [...] and the like
                self.problem(loc, node, _unknown_tag(node.tag))
                return None
            if id(node) in self._open:
                self.problem(loc, node, "an alias (*name) inside its own anchor: the value "
                             "would contain itself")  # fmt: skip
                return None
            self._open.add(id(node))
            try:
                if isinstance(node, MappingNode):
                    return self._mapping(node, loc)
                return [self.walk(item, (*loc, i)) for i, item in enumerate(node.value)]
            finally:
                self._open.discard(id(node))
        if isinstance(node, ScalarNode):
            return self._scalar(node, loc)
        raise TypeError(f"unexpected YAML node {node!r}")  # pragma: no cover - PyYAML has 3 kinds

    def _mapping(self, node: MappingNode, loc: Loc) -> dict[Any, Any]:
        pairs, merged_count = self._pairs(node, loc)
        result: dict[Any, Any] = {}
        seen_own: set[Any] = set()
        for i, (key_node, value_node) in enumerate(pairs):
            if not isinstance(key_node, ScalarNode) or key_node.tag.startswith("!"):
                self.problem(loc, key_node, "mapping keys must be plain scalars")
                continue
            key = self._construct(key_node, loc)
            if isinstance(key, bool | float):
                key = str(key)
            if not isinstance(key, str | int):
                self.problem(loc, key_node, "mapping keys must be plain scalars")
                continue
            if i >= merged_count:
                if key in seen_own:
                    self.problem((*loc, key), key_node, f"duplicate key {shown(key)}; keep one")
                seen_own.add(key)
            key_loc = (*loc, key)
            result[key] = self.walk(value_node, key_loc)
            self.doc.lines[key_loc] = key_node.start_mark.line + 1
        return result

    def _scalar(self, node: ScalarNode, loc: Loc) -> Any:
        if node.tag == SECRET_TAG and self.references:
            name = str(node.value)
            secrets = self.secrets(loc, node)
            if name not in secrets:
                if self._secrets:
                    self.problem(loc, node, f"secret {shown(name)} is not in {self.secrets_path}")
                return ""
            self.doc.sensitive.add(loc)
            return secrets[name]
        if node.tag.startswith("!") or node.tag not in self.loader_tags():
            self.problem(loc, node, _unknown_tag(node.tag))
            return None
        value = self._construct(node, loc)
        if node.tag == _STR_TAG and isinstance(value, str):
            return self.substitute(loc, node, value)
        return value

    def loader_tags(self) -> Mapping[str | None, object]:
        assert self.loader is not None
        return self.loader.yaml_constructors

    def _construct(self, node: ScalarNode, loc: Loc) -> Any:
        """The Python value of a scalar; one that cannot be a value is a problem (None)."""
        assert self.loader is not None
        try:
            return self.loader.construct_object(node, deep=True)
        except yaml.constructor.ConstructorError as err:
            self.problem(loc, node, plain_words(str(err.problem)))
        except (ValueError, OverflowError) as err:
            digits = len(node.value.lstrip("+-").replace("_", ""))
            if node.tag == _INT_TAG and digits > 4000:
                self.problem(
                    loc, node, f"an integer of {digits} digits; numbers here have at most 4300"
                )
            else:
                self.problem(loc, node, f"{shown(node.value)} cannot be read: {err}")
        return None


def _key_id(node: Node) -> object:
    """What makes two merged keys the same key (scalars by tag and text)."""
    return (node.tag, node.value) if isinstance(node, ScalarNode) else id(node)


def parse_yaml(
    text: str,
    file: str,
    *,
    env: Mapping[str, str] | None = None,
    secrets_path: Path | None = None,
    references: bool = True,
) -> YamlDocument:
    """Parse ``text``; problems are in ``.problems`` rather than raised (also beyond a limit:
    see the module's docstring). ``references=False`` reads ``${...}`` as plain text and
    ``!secret`` as an unknown tag."""
    doc = YamlDocument(file=file, data=None)
    if len(text) > MAX_FILE_BYTES:
        doc.problems.append(Problem(file, None, (), _too_long(len(text))))
        return doc
    reader = _Reader(doc, os.environ if env is None else env, secrets_path)
    reader.references = references
    loader: BoundedLoader | None = None
    try:
        loader = reader.loader = BoundedLoader(text)  # checks the characters first
        node = loader.get_single_node()
        if node is None:
            doc.problems.append(Problem(file, 1, (), "the file is empty"))
            return doc
        doc.data = reader.walk(node, ())
    except TooLarge as err:
        doc.data = None
        line = err.problem_mark.line + 1 if err.problem_mark else None
        doc.problems.append(Problem(file, line, (), str(err.problem)))
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line = mark.line + 1 if mark else None
        col = f" (column {mark.column + 1})" if mark else ""
        what = plain_words(str(err.problem), err.context)
        doc.problems.append(Problem(file, line, (), f"YAML syntax error: {what}{col}"))
    except yaml.reader.ReaderError as err:  # a character YAML does not allow
        line = text.count("\n", 0, err.position) + 1
        code = err.character if isinstance(err.character, int) else ord(err.character)
        doc.problems.append(
            Problem(file, line, (), f"character U+{code:04X} is not allowed in YAML; remove it")
        )
    except yaml.YAMLError as err:
        doc.problems.append(Problem(file, None, (), f"YAML error: {err}"))
    finally:
        if loader is not None:
            loader.dispose()
    return doc


def _too_long(size: int) -> str:
    return f"the file is {size} bytes; a site file may have at most {MAX_FILE_BYTES}"


def load_yaml(path: Path, *, env: Mapping[str, str] | None = None) -> YamlDocument:
    """Read and parse ``path``; a missing, huge or non-UTF-8 file is a problem, not an
    exception."""

    def unreadable(message: str, line: int | None = None) -> YamlDocument:
        return YamlDocument(
            file=str(path), data=None, problems=[Problem(str(path), line, (), message)]
        )

    try:
        with path.open("rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as err:
        return unreadable(f"cannot read: {err.strerror}")
    if len(data) > MAX_FILE_BYTES:
        return unreadable(_too_long(path.stat().st_size))
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        column = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        return unreadable(
            f"not UTF-8 text: byte 0x{data[err.start]:02x} at column {column}; "
            "save the file as UTF-8",
            line,
        )
    return parse_yaml(text, str(path), env=env, secrets_path=path.parent / SECRETS_FILE)
