"""Rules for secrets typed into a site file: bearer tokens and passphrases that are checked, not
only present.

An empty ``${GATE_ADMIN_TOKEN}`` (set but empty), ``changeme`` or ``tttt…`` is a door left open:
``check-config`` refuses them with the rule in the message, so the gateway never starts with
one. A placeholder is a known word (``changeme``, ``secret``, ``token``, ``<your token>``, …),
a run such as ``123456…`` or ``abcdef…``, or text of fewer than :data:`MIN_DISTINCT` different
characters; a random value of the required length is none of these but with negligible
probability (fewer than 5 distinct characters among 20 random hex digits: about 2 in 10⁹).
"""

from __future__ import annotations

import re
from typing import Annotated, Final

from pydantic import AfterValidator, SecretStr

MIN_DISTINCT: Final = 5
TOKEN_MIN_LENGTH: Final = 20
# RFC 6750, 2.1: the characters of a bearer token (b64token)
TOKEN_PATTERN: Final = re.compile(r"[A-Za-z0-9._~+/-]+=*")
TOKEN_RULE: Final = (
    f"a bearer token must be at least {TOKEN_MIN_LENGTH} characters of A-Z a-z 0-9 - . _ ~ + / "
    "(RFC 6750), random, not a placeholder; make one with 'openssl rand -hex 16'"
)
_WORDS: Final = frozenset(
    {
        "admin",
        "changeit",
        "default",
        "password",
        "passwd",
        "secret",
        "test",
        "token",
        "todo",
        "fixme",
    }
)
_FRAGMENTS: Final = (
    "changeme",
    "change-me",
    "change_me",
    "replaceme",
    "replace-me",
    "replace_me",
    "placeholder",
    "example",
    "your-",
    "your_",
    "yourtoken",
    "yoursecret",
    "${",
)
_ANGLED: Final = re.compile(r"<[^<>]*>")  # <your token here>
_RUNS: Final = (
    "0123456789" * 20,
    "abcdefghijklmnopqrstuvwxyz" * 8,
    "0123456789abcdefghijklmnopqrstuvwxyz" * 6,
    "qwertyuiopasdfghjklzxcvbnm" * 8,
)


def placeholder_problem(text: str) -> str | None:
    """Why ``text`` looks like a placeholder rather than a secret, or None."""
    low = text.strip().lower()
    if not low:
        return "it is empty (an environment variable set to nothing?)"
    if low.strip("x*.-_ ") == "" or low in _WORDS:
        return f"it is a placeholder ({len(text)} characters of filler or a word)"
    for fragment in _FRAGMENTS:
        if fragment in low:
            return f"it is a placeholder (it contains {fragment!r})"
    if _ANGLED.search(low):
        return "it is a placeholder (text in angle brackets)"
    if any(low in run for run in _RUNS):
        return "it is a run of consecutive characters, not a random value"
    if len(set(low)) < MIN_DISTINCT:
        return f"it has fewer than {MIN_DISTINCT} different characters"
    return None


def token_problem(text: str) -> str | None:
    """Why ``text`` is not an acceptable bearer token (see :data:`TOKEN_RULE`), or None."""
    if text and not TOKEN_PATTERN.fullmatch(text):
        return "it holds characters a bearer token cannot have (spaces, quotes, non-ASCII)"
    if text and len(text) < TOKEN_MIN_LENGTH:
        return f"it is {len(text)} characters long"
    return placeholder_problem(text)


def _token(value: SecretStr) -> SecretStr:
    problem = token_problem(value.get_secret_value())
    if problem is not None:
        raise ValueError(f"refused: {problem}; {TOKEN_RULE}")
    return value


def _passphrase(value: SecretStr) -> SecretStr:
    problem = placeholder_problem(value.get_secret_value())
    if problem is not None:
        raise ValueError(
            f"refused: {problem}; a secret must be random (e.g. 'openssl rand -hex 32'), kept in "
            "secrets.yaml (!secret) or the environment"
        )
    return value


BearerToken = Annotated[SecretStr, AfterValidator(_token)]
"""A bearer token from a site file: well formed, long enough, not a placeholder."""

Passphrase = Annotated[SecretStr, AfterValidator(_passphrase)]
"""A secret from a site file that keys are derived from: not a placeholder."""
