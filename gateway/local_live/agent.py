"""The local backend's agent: a handful of honest rules, NOT a language model.

It tells the time, greets, says a text it is asked to say word for word, repeats after the caller ("repeat
after me ..."), says goodbye to a goodbye or a request to hang up (and asks to end the call when the
session declared an ``end_call`` tool), greets a caller who gives their name, reads back a yes, a no or a
number, says which key was pressed when told of a keypress, transfers the caller when asked to (with a
declared ``transfer_call``, to its first allowed target), calls a declared tool whose name the caller says
(``order_status`` for "check the order status") and reads out its answer, recalls the previous thing the
caller said (which is how tests prove that session resumption kept the history), and otherwise says that
it did not catch that, what it heard, and what it can do. Everything it says is derived from what the
recogniser heard or from the clock; it invents nothing.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

NAME = "the local offline test agent"


@dataclass(slots=True)
class HistoryTurn:
    """One turn of the conversation as a session remembers it (and a resumption handle carries it)."""

    role: str  # "user" or "model"
    text: str
    audio_s: float = 0.0  # seconds of audio behind this turn (for honest token counts)
    source: str = "audio"  # "audio", "text" (realtimeInput.text) or "content" (clientContent)


@dataclass(frozen=True, slots=True)
class Reply:
    """What the local agent answers: text to say, then optionally a function to call."""

    text: str
    tool: str = ""  # a function to call once the text has been said
    args: dict[str, Any] = field(default_factory=dict)

    @property
    def end_call(self) -> bool:
        return self.tool == "end_call"


_GOODBYE = re.compile(
    r"\b(good ?bye|bye|hang up|end (the|this) call|that'?s all|that is all|i'?m done|i am done)\b"
)
_TIME = re.compile(r"\b(what time|the time|time is it)\b")
_RECALL = re.compile(r"\b(what did i (just )?say|say before|said before|previous|repeat that)\b")
_GREET = re.compile(r"\b(greet|introduce yourself|say hello)\b")
_HELLO = re.compile(r"^(hello|hi|hey)\b")
_WHO = re.compile(r"\b(who are you|your name|what are you)\b")
_KEY = re.compile(r"pressed the (\S+) key")  # how the gateway tells the model about a keypress
_TRANSFER = re.compile(
    r"\b(transfer|operator|real person|human|representative|an agent"
    r"|(speak|talk) (to|with) (a|an|some) ?(one|body|person)|put me through|connect me)\b"
)
# Heard (not typed), a goodbye or a transfer request must end the utterance: a recognizer that mishears
# general speech as the agent's phrases ("eight six four two" -> "hang up the call laura group") must not
# hang up on the caller. Measured on the evaluation set: it keeps nearly every real request.
_GOODBYE_HEARD = re.compile(
    r"(\b(good ?bye|bye)( (bye|now|then|please|thanks|thank you))?"
    r"|\bhang up( (the|call|phone|now|please)){0,3}"
    r"|\bend (the|this) call( (please|now))?"
    r"|^(that'?s all|that is all|i'?m done|i am done)( thanks| thank you)?)$"
)


def heard_goodbye(text: str) -> bool:
    """Whether a heard utterance is a goodbye or a request to hang up: what makes the agent end the call
    (the recognizer believes the grammar's goodbyes more readily, `asr.choose_transcript`). Pure."""
    return bool(_GOODBYE_HEARD.search(_clean(text)))


_TRANSFER_HEARD = re.compile(
    r"(\b(operator|real person|person|human|representative|agent|someone|somebody)( (please|now))?"
    r"|^transfer\b.*)$"
)
_REPEAT_AFTER_ME = re.compile(r"\brepeat after me\b[ ,.:]*(?P<rest>.*)$")
_NAME = re.compile(
    r"^(?:(?:hello|hi|hey) )?(?:my name is|this is|it is|it's) (?P<name>[a-z]+)(?: (?P<surname>[a-z]+))?"
    r"(?: calling)?$"
)
_YES = re.compile(r"^(yes|yeah|yep|sure|correct|that is (right|correct)|right)\b")
_NO = re.compile(r"^(no|nope|that is (wrong|not right))\b")
_NUMBER_WORDS = frozenset(
    "zero oh one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety hundred "
    "thousand".split()
)
REPEAT_PROMPT = "Go ahead: I will repeat what you say next."
NOT_CAUGHT = "Sorry, I didn't catch that."
# What the agent can do, said when it did not understand (so that a caller knows what to try).
CAN_DO = "You can ask me the time, say repeat after me, ask for a person, or say goodbye."
# The gateway asking it to say a given text (an outbound call's opening or voicemail): it says that text.
_VERBATIM = re.compile(r'word for word[^"]*"([^"]+)"', re.IGNORECASE)


def _clean(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip().lower())


def _sentence(text: str) -> str:
    text = text.strip()
    return text[:1].upper() + text[1:] + ("" if text.endswith((".", "!", "?")) else ".")


def _numbers_said(said: str) -> str | None:
    """The numbers in an utterance made of number words (and a few words around them), or None."""
    words = said.split()
    numbers = [w for w in words if w in _NUMBER_WORDS]
    if not numbers or len(numbers) * 2 < len(words):
        return None
    return " ".join(numbers)


class LocalAgent:
    """The rule-based agent behind the local backend (not a language model): greets, repeats what it heard,
    tells the time, names a key pressed, says goodbye (and hangs up), transfers when asked for a person, and
    calls a declared tool it hears named."""

    def __init__(
        self,
        *,
        can_end_call: bool = False,
        proactive: bool = False,
        tools: dict[str, dict[str, Any] | None] | None = None,
        clock: Callable[[], datetime] = datetime.now,
    ) -> None:
        self.can_end_call = can_end_call
        self.clock = clock  # what it reads when asked the time
        self.proactive = proactive
        self.tools = tools or {}  # declared functions other than end_call: name -> parameters schema

    def _transfer_target(self) -> str | None:
        if "transfer_call" not in self.tools:
            return None
        target = ((self.tools["transfer_call"] or {}).get("properties") or {}).get("target") or {}
        allowed = target.get("enum") or [""]
        return str(allowed[0])

    def _named_tool(self, said: str) -> str | None:
        words = set(re.findall(r"[a-z0-9]+", said))
        for name in self.tools:
            if name != "transfer_call" and set(name.lower().split("_")) <= words:
                return name
        return None

    @staticmethod
    def after_tool(name: str, response: Any) -> str:
        """What it says once a tool has answered (it reads the answer out: it invents nothing)."""
        if isinstance(response, dict) and "error" in response:
            return f"Sorry, {name.replace('_', ' ')} failed: {response['error']}."
        if isinstance(response, dict) and len(response) == 1 and "result" in response:
            response = response["result"]
        return f"The {name.replace('_', ' ')} answer is: {response}."

    def respond(self, text: str, history: list[HistoryTurn], *, source: str = "audio") -> Reply | None:
        """The reply to the latest user turn ``text`` (``history`` excludes it), or None to stay silent."""
        said = _clean(text)
        if source != "audio" and (verbatim := _VERBATIM.search(text)):
            return Reply(verbatim.group(1).strip())
        if not said:
            # Proactive audio lets the model ignore noise and silence instead of answering it.
            return None if self.proactive else Reply(NOT_CAUGHT)
        if key := _KEY.search(said):
            return Reply(f"You pressed {key.group(1)}.")
        if source == "audio" and (repeat := self._repeat(text, said, history)) is not None:
            return repeat
        goodbye, transfer = (_GOODBYE_HEARD, _TRANSFER_HEARD) if source == "audio" else (_GOODBYE, _TRANSFER)
        if goodbye.search(said):
            return Reply("Goodbye, and thank you for calling.", tool="end_call" if self.can_end_call else "")
        if transfer.search(said) and (source != "audio" or _TRANSFER.search(said)):
            if (target := self._transfer_target()) is not None:
                return Reply("I will transfer you now.", tool="transfer_call", args={"target": target})
            if source == "audio":
                return Reply("Sorry, I cannot transfer this call: no transfer is set up for this line.")
        if tool := self._named_tool(said):
            return Reply(f"Let me check {tool.replace('_', ' ')}.", tool=tool, args={"request": text.strip()})
        if _RECALL.search(said):
            previous = [
                t.text for t in history if t.role == "user" and t.text.strip() and t.source != "content"
            ]
            if previous:
                return Reply(f"Before that, you said: {previous[-1]}.")
            return Reply("You have not said anything before this.")
        if _TIME.search(said):
            return Reply(f"It is {self.clock().strftime('%H:%M')}.")
        if _GREET.search(said) or (source == "content" and _HELLO.search(said)):
            return Reply(f"Hello! You are speaking with {NAME}. How can I help you?")
        if _WHO.search(said):
            return Reply(f"I am {NAME}. I am not a language model: I repeat what I hear and tell the time.")
        if source == "content":
            # An instruction it cannot follow: say so instead of pretending.
            return Reply(f"I am {NAME}. I can repeat what you say, tell the time, and say goodbye.")
        if name := _NAME.match(said):
            return Reply(f"Nice to meet you, {name.group('name').capitalize()}.")
        if _HELLO.search(said) or said in ("good morning", "good afternoon", "good evening"):
            return Reply(f"Hello! You are speaking with {NAME}. How can I help you?")
        if _YES.match(said):
            return Reply("You said yes.")
        if _NO.match(said):
            return Reply("You said no.")
        if (numbers := _numbers_said(said)) is not None:
            return Reply(f"I heard the number {numbers}.")
        return Reply(f"{NOT_CAUGHT} I heard: {text.strip()}. {CAN_DO}")

    @staticmethod
    def _repeat(text: str, said: str, history: list[HistoryTurn]) -> Reply | None:
        """Repeat-after-me: the words after it, or, when it came alone, the caller's next utterance."""
        if history and history[-1].role == "model" and history[-1].text.strip() == REPEAT_PROMPT:
            return Reply(_sentence(text))
        if match := _REPEAT_AFTER_ME.search(said):
            rest = match.group("rest").strip()
            return Reply(_sentence(rest) if rest else REPEAT_PROMPT)
        return None
