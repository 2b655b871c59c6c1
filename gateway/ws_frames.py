"""WebSocket data frames on the audio path, read and written without websockets' general machinery.

Every 20 ms frame of every call arrives as a masked text frame from the carrier and leaves as one to Live.
websockets' Sans-I/O core handles every case of RFC 6455 (fragments, control frames, extensions, limits)
through a generator-based parser and a frame object per message: under load, a tenth of the gateway's
CPU (BENCHMARKS.md, issue 21). The common case is narrow: one whole, unfragmented, uncompressed data frame.
Here it is read and written directly; every other frame is left to websockets, whole, so that its parser
always sits on a frame boundary and stays the authority on the connection's state.

Pure: no I/O. The masking itself is websockets' own C routine.
"""

from __future__ import annotations

import os

from websockets.frames import apply_mask

# A whole data frame, nothing else set: FIN, no RSV bits (no extension touched it), text or binary.
WHOLE_TEXT = 0x81
WHOLE_BINARY = 0x82
MASKED = 0x80


def frame_bounds(buf: bytes | bytearray, pos: int) -> tuple[int, int] | None:
    """Where the frame that starts at `buf[pos]` has its payload and where it ends: (payload start, end),
    as soon as its header says so; the frame is all in `buf` when `end <= len(buf)`. None until the header
    (with its extended length) is in. A masked frame's key is the four bytes before its payload."""
    size = len(buf)
    if size - pos < 2:
        return None
    second = buf[pos + 1]
    length = second & 0x7F
    start = pos + 2
    if length == 126:
        start += 2
        if size < start:
            return None
        length = int.from_bytes(buf[pos + 2 : start], "big")
    elif length == 127:
        start += 8
        if size < start:
            return None
        length = int.from_bytes(buf[pos + 2 : start], "big")
    if second & MASKED:
        start += 4
    return start, start + length


def unmasked(buf: bytes | bytearray, start: int, end: int) -> bytes:
    """The payload of a masked frame (`frame_bounds`' start and end)."""
    return apply_mask(buf[start:end], buf[start - 4 : start])


class MaskKeys:
    """Masking keys for a client's frames, drawn from the OS's CSPRNG a page at a time. RFC 6455 (5.3) asks
    for keys from a strong source of entropy that do not let a third party predict the next one: slices of
    `os.urandom` are that, for one system call per thousand frames instead of one per frame."""

    __slots__ = ("_at", "_pool")

    PAGE = 4096

    def __init__(self) -> None:
        self._pool = b""
        self._at = 0

    def next(self) -> bytes:
        at = self._at
        if at + 4 > len(self._pool):
            self._pool, at = os.urandom(self.PAGE), 0
        self._at = at + 4
        return self._pool[at : at + 4]


def masked_text_frame(payload: bytes, key: bytes) -> bytes:
    """A client's whole text frame (FIN, no extension) carrying `payload`, masked with `key`."""
    length = len(payload)
    if length < 126:
        head = bytes((WHOLE_TEXT, MASKED | length))
    elif length < 1 << 16:
        head = bytes((WHOLE_TEXT, MASKED | 126)) + length.to_bytes(2, "big")
    else:
        head = bytes((WHOLE_TEXT, MASKED | 127)) + length.to_bytes(8, "big")
    return head + key + apply_mask(payload, key)
