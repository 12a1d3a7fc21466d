"""Structured log lines: one event is one line, whatever the values say."""

from __future__ import annotations

import logging

from dakera_actors.log import LogfmtFormatter


def line_for(**fields: object) -> str:
    record = logging.makeLogRecord({"msg": "event_name", "levelno": logging.INFO, "levelname": "INFO", **fields})
    return LogfmtFormatter().format(record)


def test_control_characters_cannot_forge_a_log_line() -> None:
    text = line_for(agent='a\rlevel=error event=forged\n\x1b[2J\x00\u2028"q" \\ ok\t\x85')
    assert "\r" not in text and "\n" not in text and "\x1b" not in text and "\x00" not in text
    assert "\u2028" not in text and "\x85" not in text
    assert 'agent="a\\rlevel=error event=forged\\n\\x1b[2J\\x00\\u2028\\"q\\" \\\\ ok\\t\\x85"' in text
    assert line_for(plain="node-1").endswith("plain=node-1")
    assert line_for(empty="").endswith('empty=""')
