"""The gateway as a separate process: a port to serve on and an environment free of the host's settings."""

from __future__ import annotations

import os
import socket
from pathlib import Path

REPO = str(Path(__file__).resolve().parents[2])


def free_port() -> int:
    """A loopback port free right now (for a child process to bind: an in-process server binds port 0)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without the gateway's own settings, plus `extra`, for a child process."""
    ours = ("GEMINI_", "TWILIO_", "AGENT_", "PUBLIC_", "DATABASE_URL", "CALLS_API_", "DRAIN_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(ours)}
    # The processes run elsewhere (a temporary directory): make them import this checkout's gateway.
    path = os.pathsep.join(p for p in (REPO, env.get("PYTHONPATH", "")) if p)
    return {**env, "LOG_FORMAT": "json", "PYTHONPATH": path, **extra}
