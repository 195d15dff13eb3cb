"""Markdown reference of the site file, generated from the models (``cityedge config-reference``).

docs/configuration.md is this output; a test keeps the two equal, so the reference cannot drift
from what the gateway accepts.
"""

from __future__ import annotations

import enum
import types
import typing
from typing import Any, Union

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from edge.config.site import SiteConfig
from edge.config.yamlsrc import MAX_ALIAS_VALUES, MAX_DEPTH, MAX_FILE_BYTES
from edge.registry import PLUGINS

INTRO = f"""# Site configuration reference

Generated from the models by `cityedge config-reference`; do not edit by hand.

A site file is YAML. Unknown keys are errors. String values may use `${{ENV}}` (an environment
variable), `${{ENV:-default}}`, or `!secret name` (from `secrets.yaml` next to the file). Check a file
with `cityedge check-config site.yaml`; errors name the file, the line and the key.

A file is read within limits, the same for `check-config`, `run` and `config.apply` (which brings
one over the network): at most {MAX_FILE_BYTES // 1024} KiB of UTF-8, mappings and lists nested at most
{MAX_DEPTH} levels, and anchors and aliases (`&name`, `*name`) or merge keys (`<<`) may add at most
{MAX_ALIAS_VALUES:,} values to what the file itself holds. Numbers are finite: `.inf` and `.nan` are errors.
"""


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args if a is not type(None)) + (
            " (optional)" if type(None) in args else ""
        )
    if origin is typing.Literal:
        return " / ".join(f"`{a}`" for a in args)
    if origin in (list, tuple):
        return f"list of {_type_name(args[0])}" if args else "list"
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return " / ".join(f"`{m.value}`" for m in annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return f"[{annotation.__name__}](#{annotation.__name__.lower()})"
    return getattr(annotation, "__name__", str(annotation))


def _default(field: Any) -> str:
    if field.is_required():
        return "**required**"
    if field.default_factory is not None:
        value = field.default_factory()
        if isinstance(value, BaseModel):
            return "see below"
        return f"`{value!r}`" if value not in ([], {}) else "empty"
    if field.default is PydanticUndefined or field.default is None:
        return "none"
    value = field.default
    return f"`{value.value if isinstance(value, enum.Enum) else value!r}`"


def all_models(
    root: type[BaseModel], skip: tuple[type[BaseModel], ...] = ()
) -> list[type[BaseModel]]:
    """``root`` and every model reachable from it, not descending into ``skip``."""
    out: list[type[BaseModel]] = []
    todo: list[Any] = [root]
    while todo:
        t = todo.pop(0)
        if isinstance(t, type) and issubclass(t, BaseModel):
            if t in out or t in skip:
                continue
            out.append(t)
            todo.extend(f.annotation for f in t.model_fields.values())
        else:
            todo.extend(typing.get_args(t))
    return out


def _table(model: type[BaseModel]) -> list[str]:
    doc = (model.__doc__ or "").strip().split("\n\n")[0]
    lines = [f"### {model.__name__}", ""]
    if doc and not doc.startswith(("!!!", "Usage docs")) and "BaseModel" not in doc:
        lines += [doc, ""]
    lines += ["| key | type | default | meaning |", "|---|---|---|---|"]
    for name, field in model.model_fields.items():
        desc = (field.description or "").replace("|", "\\|")
        lines.append(f"| `{name}` | {_type_name(field.annotation)} | {_default(field)} | {desc} |")
    return [*lines, ""]


def render() -> str:
    parts = [INTRO, "## The site", ""]
    seen: set[type[BaseModel]] = set()
    for model in all_models(SiteConfig, skip=tuple(p.config for p in PLUGINS)):
        seen.add(model)
        parts += _table(model)
    for role in ("source", "app", "sink"):
        parts += [f"## {role.capitalize()}s", ""]
        for p in (p for p in PLUGINS if p.role == role):
            parts += [
                f"`type: {p.type}` — {p.summary}."
                + (f" Needs the extra `cityedge[{p.extra}]`." if p.extra else ""),
                "",
            ]
            for model in all_models(p.config):
                if model in seen:
                    continue
                seen.add(model)
                parts += _table(model)
    return "\n".join(parts).rstrip() + "\n"
