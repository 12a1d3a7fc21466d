"""Structured logs: one line per event, ``key=value`` (logfmt) or JSON, on stderr.

Call sites say what happened and attach facts: ``log.info("peer_joined", peer=addr, incarnation=3)``.
Every line carries the time, level, event name and the node id of the node that logged it, so the
interleaved logs of an in-process test cluster stay readable.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Any

_RESERVED = set(vars(logging.makeLogRecord({})))


_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}
# C0/C1 controls and the Unicode line/paragraph separators can end or rewrite a line on a
# terminal or in a log shipper: a client-chosen value (an agent id, a peer's string) must not
# be able to forge a log line, so each is escaped
_CONTROL = "\x00-\x1f\x7f-\x9f\u2028\u2029"
_NEEDS_QUOTES = re.compile(f'[ ="\\\\{_CONTROL}]')
_TO_ESCAPE = re.compile(f'["\\\\{_CONTROL}]')


def _escape(match: re.Match[str]) -> str:
    c = match.group()
    if c in _ESCAPES:
        return _ESCAPES[c]
    return f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}"


def _logfmt_value(value: Any) -> str:
    text = str(value)
    if text == "" or _NEEDS_QUOTES.search(text):
        return '"' + _TO_ESCAPE.sub(_escape, text) + '"'
    return text


class LogfmtFormatter(logging.Formatter):
    def __init__(self, as_json: bool = False) -> None:
        super().__init__()
        self.as_json = as_json

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith("_"):
                fields[key] = value
        if record.exc_info:
            fields["exc"] = self.formatException(record.exc_info)
        if self.as_json:
            return json.dumps(fields, default=str)
        return " ".join(f"{k}={_logfmt_value(v)}" for k, v in fields.items())


class EventLogger:
    """A thin wrapper so call sites read ``log.info("event", key=value)``."""

    def __init__(self, name: str, **context: Any) -> None:
        self._logger = logging.getLogger(name)
        self._context = context

    def bind(self, **context: Any) -> EventLogger:
        """A logger that adds ``context`` to every line (e.g. ``node=node-1``)."""
        return EventLogger(self._logger.name, **{**self._context, **context})

    def _log(self, level: int, event: str, exc_info: Any, fields: dict[str, Any]) -> None:
        if self._logger.isEnabledFor(level):
            extra = {**self._context, **fields}
            safe = {(k if k not in _RESERVED else f"{k}_"): v for k, v in extra.items()}
            self._logger.log(level, event, extra=safe, exc_info=exc_info)

    def debug(self, event: str, **fields: Any) -> None:
        self._log(logging.DEBUG, event, None, fields)

    def info(self, event: str, **fields: Any) -> None:
        self._log(logging.INFO, event, None, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._log(logging.WARNING, event, None, fields)

    def error(self, event: str, exc_info: Any = None, **fields: Any) -> None:
        self._log(logging.ERROR, event, exc_info, fields)


def get_logger(name: str, **context: Any) -> EventLogger:
    return EventLogger(name, **context)


def configure(level: str = "info", fmt: str = "logfmt") -> None:
    """Install the structured formatter on the root logger (standalone node only)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LogfmtFormatter(as_json=fmt == "json"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # hypercorn's own access log duplicates ours; keep its errors only
    logging.getLogger("hypercorn.access").setLevel(logging.WARNING)
