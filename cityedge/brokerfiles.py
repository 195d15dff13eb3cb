"""Files a mosquitto started the Debian way reads: as root, it drops to its own user
(``mosquitto``) before it loads certificates, keys and the ACL, and again on every reload
(SIGHUP). A key written root-owned 0600 is then "Permission denied"; a world-readable one
would leak. So a key the broker reads is 0640 with the broker's group, the folders it writes
(persistence, pid file) belong to its user, and a folder it cannot reach is named.

Shared by ``cityedge broker-config`` (:mod:`cloud_bridge.citybrain.brokerconf`) and
``cityedge provision`` (:mod:`provisioning.site`). Standard library only.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from dataclasses import dataclass
from pathlib import Path

BROKER_USER = "mosquitto"


@dataclass(frozen=True)
class Account:
    """The user the broker drops to (Debian: ``mosquitto``, its own group)."""

    user: str
    uid: int
    gid: int
    group: str


def broker_account(user: str = BROKER_USER) -> Account | None:
    """The broker's account, or None when this machine has no such user."""
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        return None
    try:
        group = grp.getgrgid(pw.pw_gid).gr_name
    except KeyError:
        group = str(pw.pw_gid)
    return Account(user, pw.pw_uid, pw.pw_gid, group)


def _may(
    st: os.stat_result, account: Account, bit_owner: int, bit_group: int, bit_other: int
) -> bool:
    if account.uid == 0:
        return True
    if st.st_uid == account.uid:
        return bool(st.st_mode & bit_owner)
    if st.st_gid == account.gid:
        return bool(st.st_mode & bit_group)
    return bool(st.st_mode & bit_other)


def unreachable(path: Path, account: Account) -> Path | None:
    """The first folder above ``path`` that ``account`` may not enter, or None."""
    for folder in reversed(path.resolve().parents):
        if not _may(folder.stat(), account, stat.S_IXUSR, stat.S_IXGRP, stat.S_IXOTH):
            return folder
    return None


def share_with_broker(path: Path, account: Account | None) -> str | None:
    """Let the broker read the secret ``path`` (0640, its group), never everyone. Returns what a
    person must do when this user may not give the file to that group, else None."""
    if account is None:
        return None
    try:
        os.chown(path, -1, account.gid)
    except PermissionError:
        return f"sudo chgrp {account.group} {path} && sudo chmod 640 {path}"
    path.chmod(0o640)
    return None


def broker_folder(path: Path, account: Account | None) -> Path:
    """A folder the broker writes (persistence, pid file): made if missing, its user's when
    this process may give it away (root), else this user's."""
    path.mkdir(parents=True, exist_ok=True)
    if account is not None and os.geteuid() == 0:
        os.chown(path, account.uid, account.gid)
        path.chmod(0o750)
    return path


def run_as_line(folder: Path, account: Account | None) -> tuple[str, str | None]:
    """The ``user`` line of a mosquitto.conf whose files are below ``folder``, and a warning when
    the broker's own user cannot reach them: then a broker started as root must stay root
    (``user root``), which the warning says, with the fix."""
    if os.geteuid() != 0 or account is None:
        return "", None  # it runs as whoever starts it, who owns these files
    blocked = unreachable(folder, account)
    if blocked is None:
        return f"user {account.user}\n", None
    mode = stat.filemode(blocked.stat().st_mode)
    return "user root\n", (
        f"{blocked} ({mode}) keeps the '{account.user}' user out of {folder}: the broker stays "
        f"root; to run it as {account.user}, put the folder elsewhere (e.g. /etc/mosquitto/) or "
        f"chmod o+x {blocked}"
    )
