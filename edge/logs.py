"""Logging set-up for the gateway and the CLI: module loggers, lazy ``%s`` arguments, one line
per record, device identity in every device line (the sources put it there).

One line per record holds for messages too: an error's hint (``CE311: ...\\n  hint: ...``) or a
newline in data from outside is folded into the same line (``CE311: ...; hint: ...``), so a
line in the log is always one record and outside input cannot forge another. A traceback
(``exc_info``) keeps its own lines below the record.
"""

from __future__ import annotations

import logging
import re
import sys

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
LEVELS = ("debug", "info", "warning", "error")
_BREAKS = re.compile(r"\s*[\r\n]+\s*")


class OneLineFormatter(logging.Formatter):
    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        record.message = _BREAKS.sub("; ", record.message.strip())
        return super().formatMessage(record)


def setup_logging(level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(OneLineFormatter(FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("pymodbus", "aiohttp.access", "amqtt", "transitions"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
