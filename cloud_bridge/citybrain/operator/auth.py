"""Operator accounts, sign-in attempts and sessions of the operator's page.

**Accounts file.** One account a line, ``name:$scrypt$ln=15,r=8,p=1$SALT$HASH`` (salt and hash
in unpadded base64); blank lines and lines starting with ``#`` are skipped. Passwords are kept as
scrypt hashes (RFC 7914, the stdlib's :func:`hashlib.scrypt`): N = 2**15, r = 8, p = 1 by default
(32 MiB and some tens of milliseconds per try), a 16-byte random salt per account, 32-byte
hash; the parameters travel with each hash, so they can be raised later. ``cityedge
operator-account`` writes the file (mode 0600). The page reads it again when it changed, so an
account added or removed needs no restart.

**Sign-in.** An unknown name costs the same work as a wrong password (a hash is computed either
way) and gets the same answer. Failures are limited per client address and per account name
(:class:`FailureLimiter`): ``burst`` tries, then one more every ``refill_s``; a limited attempt
is answered 429 with ``Retry-After`` before any hash is computed. At most two hashes are
computed at once, off the event loop.

**Sessions** (:class:`Sessions`) live in memory: a random 256-bit token in the cookie, kept as its
SHA-256 (a memory dump does not hold usable tokens), an idle timeout and an absolute lifetime,
a bounded number (the oldest is dropped), and a CSRF token per session for the POSTs made after
sign-in. A restart signs everyone out.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import re
import secrets
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cloud_bridge.errors import PermanentBridgeError
from protocols.errors import HintedError

NAME_PATTERN: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
MIN_PASSWORD: Final = 12
MAX_PASSWORD: Final = 1024  # bytes of UTF-8; longer is refused before hashing
LN: Final = 15  # log2 of scrypt's N
R: Final = 8
P: Final = 1
SALT_BYTES: Final = 16
HASH_BYTES: Final = 32
_HASH = re.compile(
    r"^\$scrypt\$ln=(?P<ln>\d{1,2}),r=(?P<r>\d{1,2}),p=(?P<p>\d{1,2})\$"
    r"(?P<salt>[A-Za-z0-9+/]{16,88})\$(?P<hash>[A-Za-z0-9+/]{43,88})$"
)


class AccountError(PermanentBridgeError, HintedError):
    """The accounts file or an account cannot be used (coded for the command that says so)."""

    code = "CE002"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4))


def _scrypt(password: bytes, salt: bytes, ln: int, r: int, p: int) -> bytes:
    n = 1 << ln
    return hashlib.scrypt(
        password, salt=salt, n=n, r=r, p=p, maxmem=2 * 128 * r * n * p + 2**20, dklen=HASH_BYTES
    )


def password_problem(password: str) -> str | None:
    """Why a new password is refused, or None."""
    if len(password) < MIN_PASSWORD:
        return f"a password needs at least {MIN_PASSWORD} characters"
    if len(password.encode()) > MAX_PASSWORD:
        return f"a password may have at most {MAX_PASSWORD} bytes"
    return None


def hash_password(password: str, *, ln: int = LN, r: int = R, p: int = P) -> str:
    """The stored form of ``password``: ``$scrypt$ln=..,r=..,p=..$salt$hash``."""
    salt = secrets.token_bytes(SALT_BYTES)
    digest = _scrypt(password.encode(), salt, ln, r, p)
    return f"$scrypt$ln={ln},r={r},p={p}${_b64(salt)}${_b64(digest)}"


def _parse(encoded: str) -> tuple[int, int, int, bytes, bytes] | None:
    m = _HASH.match(encoded)
    if m is None:
        return None
    ln, r, p = int(m["ln"]), int(m["r"]), int(m["p"])
    if not (10 <= ln <= 20 and 1 <= r <= 32 and 1 <= p <= 4):
        return None
    try:
        return ln, r, p, _unb64(m["salt"]), _unb64(m["hash"])
    except ValueError:
        return None


def verify_password(password: str, encoded: str) -> bool:
    """Whether ``password`` matches ``encoded`` (compared in constant time)."""
    parsed = _parse(encoded)
    raw = password.encode()
    if parsed is None or len(raw) > MAX_PASSWORD:
        return False
    ln, r, p, salt, expected = parsed
    return hmac.compare_digest(_scrypt(raw, salt, ln, r, p), expected)


# the work an unknown name costs: the same as a known one's
_DUMMY = f"$scrypt$ln={LN},r={R},p={P}${_b64(bytes(SALT_BYTES))}${_b64(bytes(HASH_BYTES))}"


def read_accounts(path: Path) -> dict[str, str]:
    """name -> stored hash; :class:`AccountError` names the line of anything wrong."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) else "not UTF-8 text"
        raise AccountError(
            f"cannot read the operator accounts file {path}: {reason}",
            hint="make it with 'cityedge operator-account --accounts FILE --name NAME'",
        ) from None
    accounts: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, encoded = line.partition(":")
        where = f"{path}:{number}"
        if not sep or not NAME_PATTERN.match(name):
            raise AccountError(
                f"{where}: expected NAME:$scrypt$... (a name of letters, digits, '_.@-')",
                hint="write accounts with 'cityedge operator-account'",
            )
        if _parse(encoded) is None:
            raise AccountError(
                f"{where}: account {name!r} has no usable scrypt hash",
                hint=f"set its password again: cityedge operator-account --accounts {path} "
                f"--name {name}",
            )
        if name in accounts:
            raise AccountError(f"{where}: account {name!r} appears twice")
        accounts[name] = encoded
    return accounts


def write_account(path: Path, name: str, password: str | None) -> bool:
    """Set ``name``'s password (``None``: remove the account); the file is replaced atomically
    with mode 0600. Returns whether the account existed before."""
    if not NAME_PATTERN.match(name):
        raise AccountError(
            f"account name {name!r}: use 1-64 letters, digits, '_', '.', '@', '-'",
            code="CE005",
        )
    accounts = read_accounts(path) if path.exists() else {}
    existed = name in accounts
    if password is None:
        accounts.pop(name, None)
    else:
        problem = password_problem(password)
        if problem is not None:
            raise AccountError(problem, code="CE005")
        accounts[name] = hash_password(password)
    lines = ["# cityedge operator accounts: name:scrypt hash (cityedge operator-account)"]
    lines += [f"{n}:{h}" for n, h in sorted(accounts.items())]
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return existed


class Accounts:
    """The accounts file, read again when it changed (checked at each sign-in)."""

    def __init__(self, path: Path, *, workers: int = 2) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self._accounts: dict[str, str] = {}
        self._hashing = asyncio.Semaphore(workers)
        self.reload()

    def reload(self) -> None:
        """Read the file if it changed; a broken file keeps the last good accounts when there
        were some (and raises on the first read)."""
        try:
            st = self.path.stat()
        except OSError as err:
            if self._stamp is None:
                raise AccountError(
                    f"no operator accounts file {self.path}: {err.strerror}",
                    hint="make one with 'cityedge operator-account --accounts FILE --name NAME'",
                ) from None
            return
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return
        try:
            accounts = read_accounts(self.path)
        except AccountError:
            if self._stamp is None:
                raise
            return
        if not accounts and self._stamp is None:
            raise AccountError(
                f"the operator accounts file {self.path} has no account",
                hint="add one with 'cityedge operator-account --accounts FILE --name NAME'",
            )
        self._accounts, self._stamp = accounts, stamp

    def __len__(self) -> int:
        return len(self._accounts)

    async def verify(self, name: str, password: str) -> bool:
        """Whether ``name`` may sign in with ``password``; the same work either way."""
        self.reload()
        encoded = self._accounts.get(name)
        async with self._hashing:
            ok = await asyncio.to_thread(verify_password, password, encoded or _DUMMY)
        return ok and encoded is not None


class FailureLimiter:
    """Failed sign-ins per key: ``burst`` tries, then one more every ``refill_s`` (a token
    bucket per key). At most ``max_keys`` keys are tracked; beyond that the least recently
    failed key is forgotten (overflow policy: drop oldest)."""

    def __init__(
        self,
        clock: Callable[[], float],
        *,
        burst: int = 5,
        refill_s: float = 60.0,
        max_keys: int = 10_000,
    ) -> None:
        self.clock = clock
        self.burst = burst
        self.refill_s = refill_s
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, at)

    def _tokens(self, key: str, now: float) -> float:
        tokens, at = self._buckets.get(key, (float(self.burst), now))
        return min(float(self.burst), tokens + (now - at) / self.refill_s)

    def retry_after(self, *keys: str) -> float:
        """Seconds until one of ``keys`` may try again (0: now)."""
        now = self.clock()
        wait = 0.0
        for key in keys:
            tokens = self._tokens(key, now)
            if tokens < 1.0:
                wait = max(wait, (1.0 - tokens) * self.refill_s)
        return wait

    def failed(self, *keys: str) -> None:
        now = self.clock()
        for key in keys:
            self._buckets[key] = (max(0.0, self._tokens(key, now) - 1.0), now)
            self._buckets.move_to_end(key)
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)


@dataclass
class Session:
    name: str
    csrf: str
    created: float
    last_used: float
    ended: bool = False


class Sessions:
    """Signed-in operators, by the SHA-256 of their cookie's token."""

    def __init__(
        self,
        clock: Callable[[], float],
        *,
        idle_s: float = 30 * 60,
        max_age_s: float = 12 * 3600,
        max_sessions: int = 1000,
    ) -> None:
        self.clock = clock
        self.idle_s = idle_s
        self.max_age_s = max_age_s
        self.max_sessions = max_sessions
        self._by_digest: OrderedDict[bytes, Session] = OrderedDict()

    @staticmethod
    def _digest(token: str) -> bytes:
        return hashlib.sha256(token.encode()).digest()

    def create(self, name: str) -> tuple[str, Session]:
        now = self.clock()
        token = secrets.token_urlsafe(32)
        session = Session(name, secrets.token_urlsafe(32), now, now)
        self._by_digest[self._digest(token)] = session
        while len(self._by_digest) > self.max_sessions:
            self._by_digest.popitem(last=False)[1].ended = True
        return token, session

    def get(self, token: str | None, *, touch: bool = True) -> Session | None:
        """The live session of ``token`` (its idle time restarts when ``touch``), or None."""
        if not token or len(token) > 128:
            return None
        digest = self._digest(token)
        session = self._by_digest.get(digest)
        if session is None:
            return None
        if not self.alive(session):
            del self._by_digest[digest]
            session.ended = True
            return None
        if touch:
            session.last_used = self.clock()
        return session

    def end(self, token: str | None) -> None:
        session = self._by_digest.pop(self._digest(token), None) if token else None
        if session is not None:
            session.ended = True

    def alive(self, session: Session) -> bool:
        """Whether ``session`` is still signed in (not ended, not expired)."""
        now = self.clock()
        return (
            not session.ended
            and now - session.last_used <= self.idle_s
            and now - session.created <= self.max_age_s
        )
