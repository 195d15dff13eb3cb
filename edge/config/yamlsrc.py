"""Read a YAML file keeping the line of every key and item, with ``${ENV}`` and ``!secret``.

References in string values:

- ``${NAME}``            the environment variable NAME; an error if it is not set
- ``${NAME:-default}``   NAME, or ``default`` when NAME is unset or empty
- ``$${``                a literal ``${``
- ``!secret name``       the value of ``name`` in ``secrets.yaml`` next to the file (a YAML
                         mapping of names to strings; keep it out of version control)

Every problem found (syntax, duplicate keys, undefined variables, missing secrets) is collected
with its file and line, so one run lists them all.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

Loc = tuple[str | int, ...]

_REF = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_STR_TAG = "tag:yaml.org,2002:str"
SECRET_TAG = "!secret"  # noqa: S105 - a YAML tag name, not a secret
SECRETS_FILE = "secrets.yaml"


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


class _Reader:
    def __init__(
        self, doc: YamlDocument, env: Mapping[str, str], secrets_path: Path | None
    ) -> None:
        self.doc = doc
        self.env = env
        self.secrets_path = secrets_path
        self._secrets: dict[str, str] | None = None
        self.loader: yaml.SafeLoader | None = None

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
            loaded = yaml.safe_load(self.secrets_path.read_text(encoding="utf-8"))
        except yaml.YAMLError as err:
            self.problem(loc, node, f"{self.secrets_path} is not valid YAML: {err}")
            return self._secrets
        if not isinstance(loaded, dict):
            self.problem(loc, node, f"{self.secrets_path} must be a mapping of names to values")
            return self._secrets
        self._secrets = {str(k): str(v) for k, v in loaded.items()}
        return self._secrets

    def substitute(self, loc: Loc, node: Node, text: str) -> str:
        if "$" not in text:
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

    def walk(self, node: Node, loc: Loc) -> Any:
        assert self.loader is not None
        self.doc.lines[loc] = node.start_mark.line + 1
        if isinstance(node, MappingNode):
            own_keys = [
                k for k, _ in node.value if not (isinstance(k, ScalarNode) and k.value == "<<")
            ]
            self.loader.flatten_mapping(node)
            merged_count = len(node.value) - len(own_keys)
            result: dict[Any, Any] = {}
            seen_own: set[Any] = set()
            for i, (key_node, value_node) in enumerate(node.value):
                key = self.loader.construct_object(key_node, deep=True)
                if isinstance(key, bool | float):
                    key = str(key)
                if not isinstance(key, str | int):
                    self.problem(loc, key_node, "mapping keys must be plain scalars")
                    continue
                if i >= merged_count:
                    if key in seen_own:
                        self.problem((*loc, key), key_node, f"duplicate key {key!r}; keep one")
                    seen_own.add(key)
                key_loc = (*loc, key)
                result[key] = self.walk(value_node, key_loc)
                self.doc.lines[key_loc] = key_node.start_mark.line + 1
            return result
        if isinstance(node, SequenceNode):
            return [self.walk(item, (*loc, i)) for i, item in enumerate(node.value)]
        if isinstance(node, ScalarNode):
            if node.tag == SECRET_TAG:
                name = str(node.value)
                secrets = self.secrets(loc, node)
                if name not in secrets:
                    if self._secrets:
                        self.problem(loc, node, f"secret {name!r} is not in {self.secrets_path}")
                    return ""
                self.doc.sensitive.add(loc)
                return secrets[name]
            if node.tag.startswith("!"):
                self.problem(loc, node, f"unknown tag {node.tag}; the only tag is {SECRET_TAG}")
                return None
            value = self.loader.construct_object(node, deep=True)
            if node.tag == _STR_TAG and isinstance(value, str):
                return self.substitute(loc, node, value)
            return value
        raise TypeError(f"unexpected YAML node {node!r}")  # pragma: no cover - PyYAML has 3 kinds


def parse_yaml(
    text: str,
    file: str,
    *,
    env: Mapping[str, str] | None = None,
    secrets_path: Path | None = None,
) -> YamlDocument:
    """Parse ``text``; problems are in ``.problems`` rather than raised."""
    doc = YamlDocument(file=file, data=None)
    reader = _Reader(doc, os.environ if env is None else env, secrets_path)
    loader = yaml.SafeLoader(text)
    reader.loader = loader
    try:
        node = loader.get_single_node()
        if node is None:
            doc.problems.append(Problem(file, 1, (), "the file is empty"))
            return doc
        doc.data = reader.walk(node, ())
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line = mark.line + 1 if mark else None
        col = f" (column {mark.column + 1})" if mark else ""
        doc.problems.append(Problem(file, line, (), f"YAML syntax error: {err.problem}{col}"))
    except yaml.YAMLError as err:
        doc.problems.append(Problem(file, None, (), f"YAML error: {err}"))
    finally:
        loader.dispose()
    return doc


def load_yaml(path: Path, *, env: Mapping[str, str] | None = None) -> YamlDocument:
    """Read and parse ``path``; a missing file is a problem, not an exception."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        return YamlDocument(
            file=str(path),
            data=None,
            problems=[Problem(str(path), None, (), f"cannot read: {err.strerror}")],
        )
    return parse_yaml(text, str(path), env=env, secrets_path=path.parent / SECRETS_FILE)
