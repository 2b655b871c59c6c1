"""What the gateway processes of one machine share (`WEB_CONCURRENCY` > 1): each a full gateway on one port.

Made by the supervisor (`gateway.server.serve_processes`) before it forks its workers, in shared memory (no
I/O, no server, a lock held for microseconds), so that what was per process is per machine:

* the stream tokens' key when there is no Twilio auth token (development): a token issued by the process that
  answered the webhook must verify on the process the stream lands on;
* the redeemed tokens: a token used on one process is refused on every other (a table of the nonces' digests
  and expiries; a full table of unexpired tokens refuses a stream rather than forget one: 16384 streams within
  a token's minute, far beyond one machine);
* the call limit: each process keeps its calls in progress in its slot, and the calls answered whose stream is
  on its way are a table keyed by CallSid (the webhook reserves a place there, wherever the stream then
  lands; the stream's process turns it into one of its calls; an unused place lapses after the token's
  pending time). A webhook answers only while calls plus places are under MAX_CONCURRENT_CALLS; a stream
  becomes a call only while the calls are. A worker that dies has its slot emptied by the supervisor;
* the outbound calls each process has placed and not yet seen end, so that MAX_OUTBOUND_CALLS is the
  machine's (each process's in its slot);
* the console's sign-in state (`gateway.console.auth`): the sessions signed out and the failed sign-ins per
  client, so that a signed-out cookie is refused by every process and the sign-in limit is the machine's.
  These tables have a lock of their own: a flood of sign-ins never holds up a call's stream token.

One process (the default on one core, and every test that does not ask for more) has no `Machine`: the
gateway then keeps all of this in its own memory, as it always did. The rules (`redeem_in`, `reserve_in`,
`start_in`) are pure functions over arrays, tested without processes.
"""

from __future__ import annotations

import contextlib
import hashlib
import multiprocessing
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import structlog

log = structlog.get_logger("gateway.machine")

LOCK_WAIT_S = 0.5  # the lock is held for microseconds: waiting this long means its holder died holding it
TOKEN_TABLE = 16384  # redeemed tokens held at once (each lives about a minute): 256 KiB of shared memory
# The console's sign-in tables (gateway.console.auth), the same size in one process's memory or the machine's.
SIGNED_OUT_TABLE = 10_000  # sessions signed out and not yet expired (a session lasts 12 hours)
SIGN_IN_FAILURE_TABLE = 50_000  # failed sign-ins: 10,000 clients at the limit of 5; the oldest are forgotten


def digest(text: str) -> int:
    """A token nonce as a nonzero signed 64-bit integer (0 marks a free entry)."""
    value = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little", signed=True)
    return value or 1


def _put(digests: np.ndarray, expiries: np.ndarray, key: int, expires: float, now: float) -> bool:
    """Write (key, expires) over an expired or empty entry; False if every entry is still live."""
    free = int(np.argmin(expiries))  # empty entries are 0, expired ones are in the past: the least is free
    if expiries[free] > now:
        return False
    digests[free], expiries[free] = key, expires
    return True


def redeem_in(
    digests: np.ndarray, expiries: np.ndarray, nonce: int, expires: float, now: float
) -> str | None:
    """Record a token as used in the table; why it is refused, or None. Pure: the arrays are the table."""
    if bool(np.any((digests == nonce) & (expiries > now))):
        return "stream token already used"
    if not _put(digests, expiries, nonce, expires, now):
        return "too many stream tokens in use on this machine"
    return None


def reserve_in(
    waiting: tuple[np.ndarray, np.ndarray], calls: np.ndarray, call: int, until: float, now: float, limit: int
) -> bool:
    """The webhook answers a call: a place in the limit until `until` or its stream, if the machine has one
    (calls in progress on every process, plus calls answered whose stream is on its way)."""
    digests, untils = waiting
    live = untils > now
    if bool(np.any((digests == call) & live)):
        return True  # asked again while its stream is on the way: it holds its place already
    if int(np.count_nonzero(live)) + int(calls.sum()) + 1 > limit:
        return False
    return _put(digests, untils, call, until, now)


def start_in(
    waiting: tuple[np.ndarray, np.ndarray], calls: np.ndarray, slot: int, call: int, own: int, limit: int
) -> bool:
    """A verified stream becomes a call on process `slot` (which has `own` calls) if the machine's calls in
    progress leave a place; its place among the answered calls is given up either way."""
    digests, untils = waiting
    untils[digests == call] = 0.0
    calls[slot] = own
    if int(calls.sum()) + 1 > limit:
        return False
    calls[slot] = own + 1
    return True


@dataclass
class Machine:
    """The shared memory of one machine's gateway processes, and which slot this process has."""

    processes: int
    key: bytes
    _lock: Any
    _tables: tuple[Any, ...]  # redeemed digests, expiries; waiting digests, untils; calls, outbound per slot
    _console_lock: Any
    _console: tuple[Any, ...]  # signed-out session digests, expiries; failed sign-in client digests, times
    slot: int = 0
    door_url: str = (
        ""  # where a process reaches the front door (http://127.0.0.1:PORT), to ask another process
    )

    @classmethod
    def create(cls, processes: int) -> Machine:
        ctx = multiprocessing.get_context("fork")
        tables = (
            ctx.RawArray("q", TOKEN_TABLE),
            ctx.RawArray("d", TOKEN_TABLE),
            ctx.RawArray("q", TOKEN_TABLE),
            ctx.RawArray("d", TOKEN_TABLE),
            ctx.RawArray("q", processes),
            ctx.RawArray("q", processes),
        )
        console = (
            ctx.RawArray("q", SIGNED_OUT_TABLE),
            ctx.RawArray("d", SIGNED_OUT_TABLE),
            ctx.RawArray("q", SIGN_IN_FAILURE_TABLE),
            ctx.RawArray("d", SIGN_IN_FAILURE_TABLE),
        )
        return cls(processes, secrets.token_bytes(32), ctx.Lock(), tables, ctx.Lock(), console)

    @contextlib.contextmanager
    def _locked(self, lock: Any = None) -> Iterator[None]:
        """The lock, held for microseconds. A worker killed while holding it (SIGKILL, the OOM killer) would
        leave it held for ever: after LOCK_WAIT_S the tables are used without it (the worst that comes of it
        is a call over the limit in a race), rather than every process of the machine hanging."""
        lock = self._lock if lock is None else lock
        locked = lock.acquire(timeout=LOCK_WAIT_S)
        if not locked:
            log.error("machine_lock_abandoned", waited_s=LOCK_WAIT_S)
        try:
            yield
        finally:
            if locked:
                lock.release()

    def _views(self, tables: tuple[Any, ...] | None = None) -> tuple[np.ndarray, ...]:
        return tuple(
            np.frombuffer(t, dtype=np.int64 if t._type_ == "q" else np.float64)
            for t in (self._tables if tables is None else tables)
        )

    @contextlib.contextmanager
    def console_tables(self) -> Iterator[tuple[np.ndarray, ...]]:
        """The console's sign-in tables, under their own lock: signed-out session digests and expiries,
        failed sign-ins' client digests and times (gateway.console.auth's rules use them)."""
        with self._locked(self._console_lock):
            yield self._views(self._console)

    def redeem(self, nonce: str, expires: float, now: float) -> str | None:
        with self._locked():
            digests, expiries, *_ = self._views()
            return redeem_in(digests, expiries, digest(nonce), expires, now)

    def reserve(self, call_sid: str, until: float, now: float, limit: int) -> bool:
        with self._locked():
            _, _, digests, untils, calls, _ = self._views()
            return reserve_in((digests, untils), calls, digest(call_sid), until, now, limit)

    def start_call(self, call_sid: str, own: int, limit: int) -> bool:
        with self._locked():
            _, _, digests, untils, calls, _ = self._views()
            return start_in((digests, untils), calls, self.slot, digest(call_sid), own, limit)

    def publish(self, own: int) -> None:
        """This process's calls in progress, after one ended."""
        with self._locked():
            self._views()[4][self.slot] = own

    def calls(self) -> int:
        with self._locked():
            return int(self._views()[4].sum())

    def calls_by_slot(self) -> list[int]:
        """Each process's calls in progress, for the supervisor's front door, which hands connections to the
        fewest: read without the lock (each count is one aligned word; a moment old is good enough), so that
        a worker killed holding the lock cannot stall every new connection of the machine."""
        return [int(n) for n in self._views()[4]]

    def claim_outbound(self, own: int, limit: int) -> bool:
        """One more outbound call for this process, which has `own`, if the machine's stay within `limit`:
        checked and counted under one lock, so processes placing calls at once cannot pass it together."""
        with self._locked():
            outbound = self._views()[5]
            if int(outbound.sum() - outbound[self.slot]) + own + 1 > limit:
                return False
            outbound[self.slot] = own + 1
            return True

    def publish_outbound(self, own: int) -> None:
        """This process's outbound calls in progress (dialling, ringing or talking), after a change."""
        with self._locked():
            self._views()[5][self.slot] = own

    def release(self, slot: int) -> None:
        """A worker died: its calls died with it."""
        with self._locked():
            views = self._views()
            views[4][slot] = views[5][slot] = 0


_current: Machine | None = None


def current() -> Machine | None:
    """This process's machine, if it is one of several gateway processes."""
    return _current


def join(machine: Machine, slot: int) -> None:
    """In a worker, right after the fork: this process is `slot` of `machine`."""
    global _current
    machine.slot = slot
    _current = machine
