"""What the tests share: stand-ins for the gateway's peers and small helpers, one place for each.

Test modules import helpers from here, never from ``conftest`` (which holds only fixtures) or from
another test module.

- ``gateway``: settings for a gateway under test, the stream token of an answered call, its log lines.
- ``audio``: test signals (tones, room noise) and how loud what the caller heard was.
- ``processes``: the environment and a free port for the gateway run as a separate process.
- ``waiting``: polling for a condition with a deadline.
- ``call_doubles``: an in-memory line and Live connections that drive the ``Call`` with no sockets.
- ``live_peer``: a scripted Live peer (exact timing, every message recorded).
- ``local_live``: a caller's voice and a raw Live client for the local Live backend's tests.
- ``tool_server``: a custom-tool HTTP service on loopback.
- ``twilio_api``: a stand-in for Twilio's REST API on loopback.
"""
