"""Helpers only updates, commands and boot-time config parsing need (kept out of the reporting
node's heap): base64url, hex, and folder operations MicroPython has no library for."""

from bootsel import exists, rmtree  # re-exported: one copy, in the part OTA never replaces

__all__ = ["b64url_decode", "exists", "hexlify", "makedirs", "rmtree"]


def b64url_decode(text: str) -> bytes:
    """base64url without padding -> bytes (ValueError when it is not base64url)."""
    import binascii

    for c in text:
        if not ("A" <= c <= "Z" or "a" <= c <= "z" or "0" <= c <= "9" or c in "-_"):
            raise ValueError("not base64url")
    std = text.replace("-", "+").replace("_", "/")
    std += "=" * (-len(std) % 4)
    try:
        return binascii.a2b_base64(std)
    except Exception as err:  # binascii.Error on CPython, ValueError on MicroPython
        raise ValueError("not base64url")


def hexlify(data: bytes) -> str:
    import binascii

    return binascii.hexlify(data).decode()


def makedirs(path: str) -> None:
    import os

    at = "/" if path.startswith("/") else ""
    for part in path.split("/"):
        if not part:
            continue
        at = at + part if not at or at.endswith("/") else at + "/" + part
        if not exists(at):
            os.mkdir(at)
