"""The local Live backend: a Live-protocol WebSocket server that runs fully offline.

The gateway's embedded default (as SQLite is to a database server) and the peer of the integration tests
and the demo. A real voice loop built from components that ship their models in their wheels: Silero VAD,
PocketSphinx recognition, espeak-ng synthesis. The agent behind it is a few honest rules, not a language
model (see ``agent.py``).
"""

from .options import LocalLiveOptions
from .server import LocalLiveServer, run_local_live

__all__ = ["LocalLiveOptions", "LocalLiveServer", "run_local_live"]
