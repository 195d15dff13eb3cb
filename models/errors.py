"""The model build's exception tree (drawn in :mod:`models`). Codes and exit codes are the
registry's (:mod:`protocols.codes`); ``tests/cli/test_codes.py`` keeps them equal."""

from __future__ import annotations


class BuildError(Exception):
    """The build stopped: a manifest or recipe problem (``CE700``)."""

    code = "CE700"
    exit_code = 1


class ChecksumMismatch(BuildError):
    """A file differs from the checksum the manifest pins (``CE701``)."""

    code = "CE701"
    exit_code = 1


class FetchError(BuildError):
    """A registry package cannot be fetched (``CE702``)."""

    code = "CE702"
    exit_code = 3


class UnsupportedModel(BuildError, ValueError):
    """A converter met a layer or an op it does not convert (a ``ValueError`` too)."""
