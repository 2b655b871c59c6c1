"""The gateway as a separate process: a port to serve on and an environment free of the host's settings."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx

REPO = str(Path(__file__).resolve().parents[2])


def free_port() -> int:
    """A loopback port free right now (for a child process to bind: an in-process server binds port 0)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without the gateway's own settings, plus `extra`, for a child process."""
    ours = ("GEMINI_", "TWILIO_", "AGENT_", "PUBLIC_", "DATABASE_URL", "CALLS_API_", "DRAIN_", "PROMETHEUS_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(ours)}
    # The processes run elsewhere (a temporary directory): make them import this checkout's gateway.
    path = os.pathsep.join(p for p in (REPO, env.get("PYTHONPATH", "")) if p)
    # One gateway process unless a test asks for more (WEB_CONCURRENCY defaults to one per core).
    return {**env, "LOG_FORMAT": "json", "PYTHONPATH": path, "WEB_CONCURRENCY": "1", **extra}


def start_gateway(
    env: dict[str, str], cwd: Path, log_path: Path, preexec_fn: Callable[[], None] | None = None
) -> subprocess.Popen[bytes]:
    """`gateway serve` as a process of its own, its log in a file (a file, not a pipe: nobody has to keep
    reading it)."""
    with open(log_path, "w") as log_file:
        command = [sys.executable, "-m", "gateway", "serve"]
        return subprocess.Popen(command, env=env, cwd=cwd, stderr=log_file, preexec_fn=preexec_fn)


async def wait_until_serving(
    client: httpx.AsyncClient,
    url: str,
    proc: subprocess.Popen[bytes],
    log_path: Path,
    timeout_s: float,
    poll_s: float = 0.1,
) -> None:
    """Return once `url`/healthz answers 200; fail with the tail of the log if the process exits first."""
    async with asyncio.timeout(timeout_s):
        while True:
            with contextlib.suppress(httpx.TransportError):
                if (await client.get(url + "/healthz")).status_code == 200:
                    return
            assert proc.poll() is None, log_path.read_text()[-2000:]  # noqa: ASYNC240 (read once it has died)
            await asyncio.sleep(poll_s)
