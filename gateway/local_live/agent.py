"""The local backend's agent: a handful of honest rules, NOT a language model.

It repeats what it heard, tells the time, greets when asked to, says goodbye (and asks to end the call
when the session declared an ``end_call`` tool), recalls the previous thing the caller said (which is how
tests prove that session resumption kept the history), and otherwise says what it is. Everything it says
is derived from what the recogniser heard or from the clock; it invents nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

NAME = "the local offline test agent"


@dataclass(slots=True)
class HistoryTurn:
    role: str  # "user" or "model"
    text: str
    audio_s: float = 0.0  # seconds of audio behind this turn (for honest token counts)
    source: str = "audio"  # "audio", "text" (realtimeInput.text) or "content" (clientContent)


@dataclass(frozen=True, slots=True)
class Reply:
    text: str
    end_call: bool = False


_GOODBYE = re.compile(r"\b(good ?bye|bye|hang up|end the call)\b")
_TIME = re.compile(r"\b(what time|the time|time is it)\b")
_RECALL = re.compile(r"\b(what did i (just )?say|say before|said before|previous|repeat that)\b")
_GREET = re.compile(r"\b(greet|introduce yourself|say hello)\b")
_HELLO = re.compile(r"^(hello|hi|hey)\b")
_WHO = re.compile(r"\b(who are you|your name|what are you)\b")


def _clean(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip().lower())


class LocalAgent:
    def __init__(self, *, can_end_call: bool = False, proactive: bool = False) -> None:
        self.can_end_call = can_end_call
        self.proactive = proactive

    def respond(self, text: str, history: list[HistoryTurn], *, source: str = "audio") -> Reply | None:
        """The reply to the latest user turn ``text`` (``history`` excludes it), or None to stay silent."""
        said = _clean(text)
        if not said:
            # Proactive audio lets the model ignore noise and silence instead of answering it.
            return None if self.proactive else Reply("Sorry, I didn't catch that.")
        if _GOODBYE.search(said):
            return Reply("Goodbye, and thank you for calling.", end_call=self.can_end_call)
        if _RECALL.search(said):
            previous = [
                t.text for t in history if t.role == "user" and t.text.strip() and t.source != "content"
            ]
            if previous:
                return Reply(f"Before that, you said: {previous[-1]}.")
            return Reply("You have not said anything before this.")
        if _TIME.search(said):
            return Reply(f"It is {datetime.now().strftime('%H:%M')}.")
        if _GREET.search(said) or (source == "content" and _HELLO.search(said)):
            return Reply(f"Hello! You are speaking with {NAME}. How can I help you?")
        if _WHO.search(said):
            return Reply(f"I am {NAME}. I am not a language model: I repeat what I hear and tell the time.")
        if source == "content":
            # An instruction it cannot follow: say so instead of pretending.
            return Reply(f"I am {NAME}. I can repeat what you say, tell the time, and say goodbye.")
        if _HELLO.search(said):
            return Reply(f"Hello! You are speaking with {NAME}. I heard you say: {text.strip()}.")
        return Reply(f"I heard you say: {text.strip()}. I am {NAME}, so that is all I can do.")
