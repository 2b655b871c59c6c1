"""The line: the caller's side of a call, as the `Call` sees it, whatever carries it.

A line (Twilio Media Streams today; a browser or another carrier next) turns its wire protocol into the
neutral events below and carries out the neutral actions of `Line`. It says what audio it carries
(`LineAudio`), so the call resamples only where the line's rate differs from Live's: a narrowband phone
line needs 8k->16k and 24k->8k, a wideband one may need neither.

Audio crosses the seam as PCM16LE at the line's own rate; encoding it for the wire (mu-law, base64, JSON)
is the line's job.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol


@dataclass(frozen=True, slots=True)
class LineAudio:
    """The audio a line carries, as PCM16LE: the caller's rate in, the rate it plays out."""

    in_rate: int = 8000
    out_rate: int = 8000
    # The caller's audio crossed the line as mu-law: its PCM encodes back exactly, so the call keeps it for
    # replay as mu-law, at half the memory.
    mulaw: bool = False


@dataclass(frozen=True, slots=True)
class Started:
    """The line is up: the carrier's ids for the call and its media stream, who is calling whom, and the
    parameters our answer to the carrier's webhook gave the stream (the stream token among them)."""

    call_sid: str  # the carrier's id of the call (Twilio's CallSid): records, tokens and moves key on it
    stream_sid: str = ""  # the carrier's id of this media stream
    account_sid: str = ""
    caller: str = ""  # the caller's number
    called: str = ""  # the number called: it chooses the agent
    moved: bool = False  # handed over by another instance (a drain): its Live session is resumed here
    parameters: dict[str, str] = field(default_factory=dict)
    carrier: str = "twilio"  # which line carried the call (twilio, telnyx, ..., browser): kept on its record


@dataclass(slots=True)  # not frozen: 50 a second per call, and a frozen __init__ costs a setattr per field
class CallerAudio:
    """A frame of what the caller said: PCM16LE at the line's `in_rate`."""

    pcm: bytes


@dataclass(frozen=True, slots=True)
class Played:
    """A mark came back: everything sent before it has played out, or a `clear` flushed it."""

    name: str


@dataclass(frozen=True, slots=True)
class Keypress:
    """The caller pressed a key (DTMF): one of 0-9, *, #, A-D."""

    digit: str


@dataclass(frozen=True, slots=True)
class Ended:
    """The caller's side ended the line: `stop` (the carrier said so) or `closed` (the socket went away)."""

    how: Literal["stop", "closed"]


LineEvent = Started | CallerAudio | Played | Keypress | Ended


class LineClosed(Exception):
    """The line is gone (the caller hung up, or the carrier dropped the stream): nothing more can be sent."""


class Line(Protocol):
    """What the `Call` needs of the caller's line. Sends raise `LineClosed` once the line is gone."""

    audio: LineAudio
    bad_messages: int  # messages the line could not read and skipped

    async def receive(self) -> LineEvent:
        """The next event; `Ended` once the line has ended (and on every call after that)."""
        ...

    async def play(self, pcm: bytes) -> None:
        """Queue agent audio (PCM16LE at `audio.out_rate`) for the caller; the line plays it out in order."""
        ...

    async def clear(self) -> None:
        """Drop everything queued and not yet played (barge-in). Marks in flight come back `Played`."""
        ...

    async def mark(self, name: str) -> None:
        """Ask to be told (`Played(name)`) once everything queued so far has played out."""
        ...

    async def transfer(self, target: str) -> bool:
        """Move the caller to `target`; False if the call had already ended. Raises if the carrier refuses."""
        ...

    async def close(self, refusal: str | None = None) -> None:
        """End our side of the line (the caller hears what the carrier does next: a hang-up); with a
        `refusal`, the stream is refused for that reason instead."""
        ...
