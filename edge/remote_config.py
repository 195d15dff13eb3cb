"""Remote configuration through signed commands: ``config.get`` and ``config.apply``.

``config.get`` returns the effective configuration (secrets shown as ``**********``) and the
sha256 of the site file. ``config.apply`` takes ``{"yaml": "<a whole site file>"}`` (optionally
``"expect_sha256"``, refused when the file changed meanwhile, and ``"rollback_after_s"``) and:

1. validates it exactly as ``cityedge check-config`` would, in a temporary file beside the site
   file (so relative paths, ``${ENV}`` and ``!secret`` resolve the same) — ``bad-args`` with every
   problem when it is not valid, and nothing changes. The text is outside input: more than
   :data:`~edge.config.yamlsrc.MAX_FILE_BYTES` or text UTF-8 cannot carry is refused before it is
   parsed, and parsing (with the limits of any site file: depth, alias expansion) runs in a
   worker thread, so the gateway's event loop goes on meanwhile; one ``config.apply`` at a time;
2. keeps the current file as ``<file>.previous``, writes a trial marker ``<file>.trial`` (request
   id and deadline) and replaces the site file atomically (write, fsync, rename);
3. replies, then restarts the gateway's stages with the new file;
4. when the link to the broker is back (the new configuration's sink connected) within
   ``rollback_after_s``, the trial ends (the marker is removed, a ``config.confirmed`` line is
   logged); otherwise the previous file is put back and the gateway restarts with it. A gateway
   that dies during the trial finds the marker when it starts and keeps counting from it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from cloud_bridge.uplink.commands import CommandError, Handler
from edge.config.site import LoadedSite, load_site
from edge.config.yamlsrc import MAX_FILE_BYTES
from edge.errors import ConfigError
from protocols.commands import CommandFailure, CommandRequest

log = logging.getLogger(__name__)

RESTART_DELAY_S = 0.5  # lets the reply leave before the stages stop
MAX_PROBLEMS = 20  # problems of a refused file named in the reply (the rest are counted)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.new")
    with tmp.open("w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _site_text(value: object) -> str:
    """``args.yaml``: a whole site file that UTF-8 can carry, checked before it is parsed."""
    if not isinstance(value, str) or not value.strip():
        raise CommandError(CommandFailure.BAD_ARGS, "args.yaml must hold a whole site file")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:  # a lone surrogate from a JSON escape: no file can hold it
        raise CommandError(
            CommandFailure.BAD_ARGS, "args.yaml is not valid Unicode (a lone surrogate)"
        ) from None
    if size > MAX_FILE_BYTES:
        raise CommandError(
            CommandFailure.BAD_ARGS,
            f"args.yaml is {size} bytes; a site file may have at most {MAX_FILE_BYTES}",
        )
    return value


def _rollback_s(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 1 <= value <= 3600:
        raise CommandError(
            CommandFailure.BAD_ARGS, "rollback_after_s must be a number of seconds, 1..3600"
        )
    return float(value)


async def _load_off_loop(path: Path) -> LoadedSite:
    """:func:`load_site` in a worker thread: a slow file never stalls the event loop."""
    return await asyncio.to_thread(load_site, path)


class RemoteConfig:
    """Owned by ``cityedge run``: hands its handlers to the gateway's sinks, asks for restarts."""

    def __init__(self, path: Path, default_rollback_s: float = 60.0) -> None:
        self.path = path
        self.previous = path.with_name(path.name + ".previous")
        self.marker = path.with_name(path.name + ".trial")
        self.default_rollback_s = default_rollback_s
        self.restart = asyncio.Event()
        self._timer: asyncio.Task[None] | None = None
        self._applying = asyncio.Lock()

    # -- the handlers -------------------------------------------------------------------------

    def handlers(self) -> dict[str, Handler]:
        return {"config.get": self.get, "config.apply": self.apply}

    async def get(self, _request: CommandRequest) -> dict[str, Any]:
        site = await _load_off_loop(self.path)
        return {
            "sha256": _sha256(self.path),
            "config": json.loads(site.config.model_dump_json()),
            "trial": self.marker.exists(),
        }

    async def apply(self, request: CommandRequest) -> dict[str, Any]:
        text = _site_text(request.args.get("yaml"))
        if self.marker.exists():
            raise CommandError(CommandFailure.FAILED, "a configuration is on trial; try later")
        expect = request.args.get("expect_sha256")
        if expect is not None and expect != _sha256(self.path):
            raise CommandError(CommandFailure.FAILED, "the site file changed since expect_sha256")
        rollback_s = _rollback_s(request.args.get("rollback_after_s", self.default_rollback_s))
        if self._applying.locked():
            raise CommandError(
                CommandFailure.FAILED, "another config.apply is under way; try later"
            )
        async with self._applying:
            candidate = self.path.with_name(f".{self.path.name}.candidate.yaml")
            candidate.write_text(text, encoding="utf-8")
            try:
                await _load_off_loop(candidate)
            except ConfigError as err:
                shown = [p.replace(str(candidate), "yaml") for p in err.problems[:MAX_PROBLEMS]]
                more = len(err.problems) - len(shown)
                problems = "; ".join(shown) + (f"; and {more} more" if more > 0 else "")
                raise CommandError(
                    CommandFailure.BAD_ARGS, f"invalid site file: {problems}"
                ) from err
            finally:
                candidate.unlink(missing_ok=True)
            _write_atomic(self.previous, self.path.read_text(encoding="utf-8"))
            _write_atomic(
                self.marker,
                json.dumps({"request": request.id, "deadline": time.time() + rollback_s}),
            )
            _write_atomic(self.path, text)
        log.warning(
            "config.apply %s: new site file in place; it rolls back unless the link is back "
            "within %.0f s",
            request.id,
            rollback_s,
        )
        asyncio.get_running_loop().call_later(RESTART_DELAY_S, self.restart.set)
        return {"applied": True, "rollback_after_s": rollback_s, "sha256": _sha256(self.path)}

    # -- the trial ----------------------------------------------------------------------------

    def link_up(self) -> None:
        """The sink's link to the broker is up: a configuration on trial is confirmed."""
        if self.marker.exists():
            with contextlib.suppress(OSError):
                request = json.loads(self.marker.read_text()).get("request")
                self.marker.unlink()
                log.warning("config.confirmed %s: the link is back with the new site file", request)
            if self._timer is not None:
                self._timer.cancel()

    def start_trial_timer(self) -> None:
        """Called at each start of the stages: watch a trial that is under way."""
        if self._timer is not None:
            self._timer.cancel()
        if not self.marker.exists():
            return
        try:
            deadline = float(json.loads(self.marker.read_text())["deadline"])
        except (OSError, ValueError, KeyError, TypeError):
            deadline = time.time()
        self._timer = asyncio.create_task(self._rollback_at(deadline))

    async def _rollback_at(self, deadline: float) -> None:
        await asyncio.sleep(max(0.0, deadline - time.time()))
        if not self.marker.exists():
            return
        if self.previous.exists():
            os.replace(self.previous, self.path)
        self.marker.unlink(missing_ok=True)
        log.error(
            "config.rolled-back: the link did not come back with the new site file; "
            "the previous one is in place again"
        )
        self.restart.set()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
