"""Log lines as the processes of one machine write them."""

from __future__ import annotations

import io
import json
import logging
import sys

import structlog

from gateway.logs import configure_logging


class Writes(io.StringIO):
    """A write-through stream (what stderr is when it is a file) that keeps each write call apart."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def write(self, text: str) -> int:
        self.calls.append(text)
        return super().write(text)


def test_each_log_line_is_one_write(monkeypatch):
    """WEB_CONCURRENCY's processes share one stderr: a line written in two calls (print's text, then its
    newline) could have another process's line spliced into it."""
    stream = Writes()
    monkeypatch.setattr(sys, "stderr", stream)
    configure_logging("json")
    try:
        structlog.get_logger("t").info("call_answered", call_sid="CA1")
        logging.getLogger("gateway.test_logs").warning("a standard library line")  # through the root
    finally:
        configure_logging("json")  # bound to the real stderr again (it is looked up per line)
    assert len(stream.calls) == 2
    assert all(call.endswith("\n") and call.count("\n") == 1 for call in stream.calls)
    events = [json.loads(call)["event"] for call in stream.calls]
    assert events == ["call_answered", "a standard library line"]
