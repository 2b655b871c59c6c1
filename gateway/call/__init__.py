"""One phone call: the async story in `call`, the rules it follows as pure state beside it."""

from gateway.call.call import *  # noqa: F403
