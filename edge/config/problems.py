"""Turn pydantic validation errors into one readable line per problem, located in the YAML.

``loc`` from pydantic follows the model, not the data: a discriminated union adds the tag
(``sources.0.modbus.host``). :func:`data_loc` walks the loc along the data and keeps only the
steps that exist there, which gives back the path a person sees in the file.

"Did you mean" comes from :mod:`difflib`: for an unknown key, against the fields the model at
that place accepts; for a literal, enum or union tag, against the values it expects. An unknown
key that is a near-miss of a missing required field is one problem, not two.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Union

from pydantic import BaseModel, SecretBytes, SecretStr, ValidationError
from pydantic_core import ErrorDetails

from edge.config.yamlsrc import Loc, Problem, YamlDocument, load_yaml

_QUOTED = re.compile(r"'([^']*)'")


def did_you_mean(word: object, candidates: Iterable[str]) -> str:
    """``; did you mean "x"?`` or an empty string."""
    if not isinstance(word, str):
        return ""
    options = list(candidates)
    by_lower = {c.lower(): c for c in options}
    match = difflib.get_close_matches(word.lower(), list(by_lower), n=1, cutoff=0.6)
    return f'; did you mean "{by_lower[match[0]]}"?' if match else ""


def data_loc(data: Any, loc: Sequence[str | int]) -> Loc:
    """The part of a pydantic ``loc`` that names real places in ``data``."""
    out: list[str | int] = []
    current = data
    for step in loc:
        in_dict = isinstance(current, dict) and step in current
        in_list = isinstance(current, list) and isinstance(step, int) and 0 <= step < len(current)
        if in_dict or in_list:
            out.append(step)
            current = current[step]
        elif isinstance(current, dict) and step == loc[-1] and current.get("type") != step:
            # a missing or unknown key: name it, though it has no value (but not the union tag
            # pydantic puts last for a model-level error of a plug-in)
            out.append(step)
            current = None
    return tuple(out)


def _unwrap(annotation: Any) -> list[Any]:
    """The concrete types an annotation allows (Annotated, Optional and unions removed)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        out: list[Any] = []
        for arg in typing.get_args(annotation):
            out.extend(_unwrap(arg))
        return out
    return [annotation]


def model_at(root: type[BaseModel], loc: Sequence[str | int]) -> type[BaseModel] | None:
    """The model class that holds the last step of a pydantic ``loc``, if the walk finds one."""
    candidates: list[Any] = [root]
    for step in loc[:-1]:
        models = [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]
        chosen = None
        if isinstance(step, str):
            tagged = [m for m in models if _tag_of(m) == step or m.__name__ == step]
            if tagged:
                candidates = tagged
                continue
            for m in models:
                if step in m.model_fields:
                    chosen = m.model_fields[step].annotation
                    break
        if chosen is not None:
            candidates = _unwrap(chosen)
            continue
        # a list index or a dict key: step into the container's item type
        inner: list[Any] = []
        for c in candidates:
            args = typing.get_args(c)
            if typing.get_origin(c) in (list, tuple, set, frozenset) and args:
                inner.extend(_unwrap(args[0]))
            elif typing.get_origin(c) is dict and len(args) == 2:
                inner.extend(_unwrap(args[1]))
        if not inner:
            return None
        candidates = inner
    models = [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]
    return models[0] if len(models) == 1 else None


def _tag_of(model: type[BaseModel]) -> str | None:
    field = model.model_fields.get("type")
    if field is None:
        return None
    args = typing.get_args(field.annotation)
    return args[0] if len(args) == 1 and isinstance(args[0], str) else None


def _describe_input(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return f'"{value}"'
    return repr(value)


MASK = "**********"
_SECRET_WORDS = ("password", "secret", "token", "psk", "passphrase", "api_key", "pw")


def is_secret(root: type[BaseModel], loc: Sequence[str | int]) -> bool:
    """A secret's place: a ``SecretStr``/``SecretBytes`` field, or a key named like one (its
    value is never shown in a message, only :data:`MASK`)."""
    name = loc[-1] if loc else None
    if not isinstance(name, str):
        return False
    model = model_at(root, loc)
    if model is not None and name in model.model_fields:
        kinds = _unwrap(model.model_fields[name].annotation)
        if any(k in (SecretStr, SecretBytes) for k in kinds):
            return True
    return any(w == name.lower() or w in name.lower().split("_") for w in _SECRET_WORDS)


def _length(kind: str, ctx: dict[str, Any], value: Any) -> str | None:
    """``must be at least 16 characters`` rather than pydantic's ``... 16 items ...``."""
    text = isinstance(value, str | SecretStr | bytes | SecretBytes)
    unit = "characters" if text else "items"
    if kind in ("too_short", "string_too_short") and "min_length" in ctx:
        return f"must be at least {ctx['min_length']} {unit}"
    if kind in ("too_long", "string_too_long") and "max_length" in ctx:
        return f"must be at most {ctx['max_length']} {unit}"
    return None


def _message(err: ErrorDetails, root: type[BaseModel]) -> str:
    kind = err["type"]
    ctx = err.get("ctx") or {}
    value = err.get("input")
    secret = is_secret(root, err["loc"])
    got = MASK if secret else _describe_input(value)
    length = _length(kind, ctx, value)
    if length is not None:
        return f"{length} (got {got})" if not isinstance(value, dict | list) else length
    if kind == "extra_forbidden":
        model = model_at(root, err["loc"])
        fields = list(model.model_fields) if model else []
        hint = did_you_mean(err["loc"][-1], fields)
        allowed = f" (allowed: {', '.join(fields)})" if fields and not hint else ""
        return f"unknown key{hint or allowed}" + ("" if hint else "; remove it")
    if kind == "missing":
        model = model_at(root, err["loc"])
        name = err["loc"][-1]
        desc = ""
        if model and isinstance(name, str) and name in model.model_fields:
            d = model.model_fields[name].description
            desc = f" ({d})" if d else ""
        return f"required key is missing{desc}; add it"
    if kind in ("literal_error", "enum"):
        expected = _QUOTED.findall(str(ctx.get("expected", "")))
        near = "" if secret else did_you_mean(value, expected)
        return f"expected one of {', '.join(expected)} (got {got}){near}"
    if kind == "union_tag_invalid":
        expected = _QUOTED.findall(str(ctx.get("expected_tags", "")))
        tag = ctx.get("tag")
        return (
            f"unknown {ctx.get('discriminator', 'type').strip(chr(39))} {tag!r}; expected one of "
            f"{', '.join(expected)}{did_you_mean(tag, expected)}"
        )
    if kind == "union_tag_not_found":
        return (
            f"needs a {str(ctx.get('discriminator', 'type')).strip(chr(39))} key to say what it is"
        )
    msg = err["msg"]
    msg = msg[len("Value error, ") :] if msg.startswith("Value error, ") else msg
    if isinstance(value, dict | list) or kind.startswith("model_"):
        return msg
    if secret and isinstance(value, str) and value:  # the library's words may quote it
        msg = msg.replace(value, MASK)
    return f"{msg[0].lower()}{msg[1:]} (got {got})"


def problems_from_validation(
    err: ValidationError, doc: YamlDocument, root: type[BaseModel]
) -> list[Problem]:
    """One :class:`Problem` per place in the file; near-miss keys merged with their missing twin."""
    details = err.errors(include_url=False)
    by_place: dict[Loc, list[ErrorDetails]] = {}
    for d in details:
        by_place.setdefault(data_loc(doc.data, d["loc"]), []).append(d)

    # An unknown key close to a missing required sibling is the same mistake: report it once.
    missing = {loc for loc, ds in by_place.items() if any(d["type"] == "missing" for d in ds)}
    for loc, ds in list(by_place.items()):
        if not any(d["type"] == "extra_forbidden" for d in ds) or not isinstance(loc[-1], str):
            continue
        twins = [m for m in missing if m[:-1] == loc[:-1] and isinstance(m[-1], str)]
        close = difflib.get_close_matches(loc[-1], [str(m[-1]) for m in twins], n=1, cutoff=0.6)
        if close:
            by_place.pop((*loc[:-1], close[0]), None)

    problems: list[Problem] = []
    for loc, ds in by_place.items():
        messages = list(dict.fromkeys(_message(d, root) for d in ds))
        line = doc.line_of(loc if ds[0]["type"] != "missing" else loc[:-1])
        problems.append(Problem(doc.file, line, loc, "; or ".join(messages)))
    return problems


M = typing.TypeVar("M", bound=BaseModel)


def load_model(path: Path, model: type[M]) -> M:
    """A data file (profile, timing sheet, scenario) read as YAML and validated against
    ``model``; ``ValueError`` lists every problem with file and line."""
    doc = load_yaml(path, env={})
    if doc.problems:
        raise ValueError("; ".join(str(p) for p in doc.problems))
    try:
        return model.model_validate(doc.data)
    except ValidationError as err:
        raise ValueError(
            "; ".join(str(p) for p in problems_from_validation(err, doc, model))
        ) from err
