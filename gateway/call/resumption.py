"""What it takes to carry one Live session across connections: the handle, and the caller's audio since."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

FRAME_S = 0.02
# Caller audio held while the Live connection is switched, and kept since the last resumable handle (the
# new connection resumes from that handle, so audio after it must be sent again). Frames as the call keeps
# them: mu-law from a mu-law line (80 kB kept and 80 kB held at most), else PCM16 at the line's rate (320 kB
# each on a 16 kHz line).
MAX_REPLAY_S = 10.0
# Connections that open and then die before the server says anything: past this many in a row, give up.
MAX_BARREN_CONNECTIONS = 3
# After goAway, switch this long before the deadline at most, to leave time for the new connection's setup.
GO_AWAY_MARGIN_S = 5.0
# A connection that has spoken, then says nothing at all for this long after the caller made a sound, has
# stalled (a healthy Live transcribes or answers within a second or two).
STALL_S = 8.0


@dataclass
class Resumption:
    """The Live session's state across connections.

    A Live connection lasts minutes, a call may last hours: on `goAway`, or when a connection breaks, the
    call switches to a new connection that resumes the session from the latest resumable handle. The handle
    covers what the server had when it was issued; the caller's audio since then is kept (bounded) and
    replayed on the new connection, and audio arriving during the switch is held and sent after it, so
    nothing the caller says is lost. Keypresses during a switch are held the same way.
    """

    max_frames: int = int(MAX_REPLAY_S / FRAME_S)
    max_barren: int = MAX_BARREN_CONNECTIONS
    stall_s: float = STALL_S
    handle: str = ""
    handle_fresh: bool = False  # the handle came after the agent last spoke: it covers the conversation
    switch_by: float | None = None  # after goAway: switch connections by this monotonic time
    since_handle: deque[bytes] = field(default_factory=deque)  # caller frames the handle does not cover
    held: deque[bytes] | None = None  # caller frames waiting for the new connection (None: not switching)
    held_keys: list[str] = field(default_factory=list)
    barren: int = 0  # connections in a row lost before the server said anything
    heard_at: float | None = None  # when the current connection last said anything (None: nothing yet)
    after_switch: bool = False  # the current connection was switched to: audio was replayed to it
    dropped: int = 0  # caller frames lost because a switch took longer than the hold allows
    # Transparent resumption (Vertex AI): each handle says which client message of the current connection it
    # covers (`lastConsumedClientMessageIndex`). Caller frames are numbered in the order kept (`first_seq` is
    # since_handle[0]'s), the message index each was sent in is noted, and exactly the frames after the one
    # the server consumed stay to be replayed. (Without it, a handle covers everything sent before it.)
    transparent: bool = False
    first_seq: int = 0
    held_first_seq: int = 0  # the number of held[0], from begin_switch on
    replayed_seq: int = -1  # the number of the frame `next_held` returned last
    sent: deque[tuple[int, int]] = field(default_factory=deque)  # (message index, frame number), in order
    covered: int = -1  # the newest frame number the current connection's handles have covered
    # The newest kept frames not sent yet: the call sends several in one message
    # (`gateway.call.caller_chunks`). They are the tail of since_handle, and no handle covers them.
    unsent: int = 0
    replaying: bool = False  # from begin_switch until the held frames are all sent: frames go through `held`

    def __post_init__(self) -> None:
        self.since_handle = deque(self.since_handle, maxlen=self.max_frames)
        self.sent = deque(self.sent, maxlen=self.max_frames)

    @property
    def last_kept_seq(self) -> int:
        """The number of the frame `keep` took last."""
        return self.first_seq + len(self.since_handle) - 1

    @property
    def switching(self) -> bool:
        return self.held is not None

    # --- the caller's side ---

    def keep(self, frame: bytes) -> bool:
        """Keep a caller frame for replay. True: send it now; False: a switch is under way, `hold` it."""
        if len(self.since_handle) == self.since_handle.maxlen:
            self.first_seq += 1  # the oldest goes: past the bound, it is not replayed
        self.since_handle.append(frame)
        if not self.replaying:  # (before the replay has begun, a frame kept after a break is not sent either)
            self.unsent = min(self.unsent + 1, len(self.since_handle))
        return self.held is None

    def unsent_frames(self) -> list[bytes]:
        """The frames kept and not sent yet, oldest first."""
        kept = self.since_handle
        return [kept[i] for i in range(len(kept) - self.unsent, len(kept))]

    def unsent_seqs(self) -> range:
        """The numbers of the frames kept and not sent yet."""
        return range(self.last_kept_seq - self.unsent + 1, self.last_kept_seq + 1)

    def unsent_sent(self, index: int) -> None:
        """The unsent frames went out together as client message `index` of the current connection."""
        if self.transparent:
            self.sent.extend((index, seq) for seq in self.unsent_seqs())
        self.unsent = 0

    def frame_sent(self, index: int, seq: int) -> None:
        """Frame number `seq` went out as client message `index` of the current connection (setup is 0)."""
        if self.transparent:
            self.sent.append((index, seq))

    def consumed(self, index: int) -> None:
        """The server's state includes this connection's client messages up to `index`: the frames sent in
        them need no replay. Frames sent after it, and frames not sent yet, stay; so does a frame sent again
        later (with TURN_DETECTION=local the speech onset goes again inside the activity: only that copy
        counts) until its later copy is covered."""
        while self.sent and self.sent[0][0] <= index:
            self.covered = max(self.covered, self.sent.popleft()[1])
        last = self.covered
        if self.sent:
            last = min(last, min(seq for _, seq in self.sent) - 1)
        self._forget(last - self.first_seq + 1)

    def _forget(self, frames: int) -> None:
        """The oldest `frames` kept frames need no replay: let them go (never one not sent yet)."""
        for _ in range(min(frames, len(self.since_handle) - self.unsent)):
            self.since_handle.popleft()
            self.first_seq += 1

    def broke(self) -> None:
        """A send found the connection broken: hold the caller's audio until the new one is up."""
        if self.held is None:
            self.held = deque()  # (numbered by begin_switch, which takes the replay from since_handle)

    def hold(self, frame: bytes) -> bool:
        """Hold a frame for the new connection. False when the oldest held frame had to be dropped."""
        assert self.held is not None
        full = len(self.held) >= self.max_frames
        if full:
            self.held.popleft()
            self.held_first_seq += 1
            self.dropped += 1
        self.held.append(frame)
        return not full

    def keypress(self, text: str) -> bool:
        """True: tell the agent now; False: held until the new connection is up."""
        if self.held is None:
            return True
        self.held_keys.append(text)
        return False

    # --- the server's side ---

    def handle_update(
        self, handle: str, resumable: bool, now: float, consumed_index: int | None = None
    ) -> bool:
        """A resumption update. True when its handle covers all said so far. A handle in the first message
        of a connection the call switched to is kept to resume from but covers no replayed audio: the
        server issued it on setup, before it took the replay in (the local backend does so). With
        transparent resumption the server says which message it covers: exactly the frames after it stay."""
        if not (resumable and handle):
            return False
        self.handle = handle
        if self.transparent and consumed_index is not None:
            self.consumed(consumed_index)
            self.handle_fresh = len(self.since_handle) <= self.unsent  # all it was sent, but for a chunk held
            return self.handle_fresh
        covers = not (self.after_switch and self.heard_at is None)
        self.handle_fresh = covers
        if covers:  # it covers what was sent; frames not sent yet stay
            self._forget(len(self.since_handle))
        return covers

    def agent_spoke(self) -> None:
        """The agent said something the handle does not cover yet."""
        self.handle_fresh = False

    def go_away(self, time_left_s: float, now: float) -> None:
        """The server will close this connection in `time_left_s`: switch by then, with a margin."""
        margin = min(GO_AWAY_MARGIN_S, time_left_s * 0.25)
        self.switch_by = now + max(0.0, time_left_s - margin)

    def heard(self, now: float) -> None:
        """The current connection said something: it is alive."""
        self.heard_at = now

    def wait(self, now: float, caller_sound_at: float | None) -> tuple[float | None, str]:
        """How long to wait for the server's next message (None: no limit), and why to switch connections
        if it does not come by then: the goAway deadline, or a stall. A connection has stalled when it
        has spoken before, the caller made a sound after it last did, and it stays silent `stall_s` after
        that sound: it stopped reading or serving, whatever the buffers between us hold. (A connection
        that has said nothing yet is not judged: after a switch, the caller's noise alone does not make
        the new one look stalled.)"""
        stall_at = None
        if self.heard_at is not None and caller_sound_at is not None and caller_sound_at > self.heard_at:
            stall_at = caller_sound_at + self.stall_s
        switch_by = self.switch_by
        if switch_by is not None and (stall_at is None or switch_by <= stall_at):
            return max(0.0, switch_by - now), "go_away_deadline"
        if stall_at is not None:
            return max(0.0, stall_at - now), "stalled"
        return None, ""

    def connection_lost(self, heard_from_server: bool) -> bool:
        """A set-up connection broke. True when it is time to give up: too many connections in a row died
        before the server said a word (Live accepts the setup but cannot serve the session)."""
        self.barren = 0 if heard_from_server else self.barren + 1
        return self.barren >= self.max_barren

    def handle_rejected(self) -> None:
        """The server does not know the handle (expired): a fresh session loses the context, not the call."""
        self.handle = ""

    # --- the switch ---

    def begin_switch(self) -> None:
        """The old connection is closed: everything said since the handle will be sent to the new one,
        followed by anything that arrives meanwhile."""
        self.held = deque(self.since_handle)  # the frames not sent yet among them
        self.held_first_seq = self.first_seq
        self.unsent = 0
        self.replaying = True
        self.sent.clear()  # message indices are the old connection's
        self.covered = -1
        self.switch_by = None
        self.handle_fresh = False
        self.heard_at = None
        self.after_switch = True

    def next_held_chunk(self, frames: int) -> list[tuple[bytes, int]]:
        """Up to `frames` of the frames to send on the new connection, with their numbers, to go in one
        message; [] once there is none left (the switch is over, as with `next_held`)."""
        chunk: list[tuple[bytes, int]] = []
        while len(chunk) < frames and self.held:
            frame = self.next_held()
            assert frame is not None
            chunk.append((frame, self.replayed_seq))
        if not chunk:
            self.next_held()  # empty: the switch is over
        return chunk

    def next_held(self) -> bytes | None:
        """The next frame to send on the new connection; None once there is none left (the switch is over,
        and the caller's audio goes straight to the connection again)."""
        if self.held:
            self.replayed_seq = self.held_first_seq
            self.held_first_seq += 1
            return self.held.popleft()
        self.held = None
        self.replaying = False
        return None

    def take_keys(self) -> list[str]:
        keys, self.held_keys = self.held_keys, []
        return keys
