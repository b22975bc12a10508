"""The consumer group on Redis Streams: read, take over a dead peer's entries, acknowledge, dead-letter.

An entry stays in the group's pending list (PEL) from XREADGROUP until XACK, so whatever a bridge held
when it died is still there. A restarted bridge with the same consumer name reads its own PEL first
(`0`), then new entries (`>`); entries of a consumer that stopped refreshing them are taken over with
XAUTOCLAIM past `claim_idle_s`. A live bridge refreshes the entries it holds (XCLAIM JUSTID, which
resets their idle time without counting a delivery), so peers only take over from the dead.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import redis

from tools.bridge.entry import Entry
from tools.bridge.options import Options

log = logging.getLogger("bridge.redis")

NEW = ">"


def connect(url: str, timeout_s: float = 10.0) -> redis.Redis:
    """A client for redis:// and rediss:// URLs (password, database and TLS options in the URL)."""
    return redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
                                health_check_interval=30)  # fmt: skip


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RedisIn:
    """The group's side of the bridge; every call may raise redis.RedisError (the pipeline backs off)."""

    def __init__(self, options: Options, client: redis.Redis | None = None):
        self.options = options
        self.redis = client or connect(options.redis, timeout_s=max(10.0, options.block_ms / 1000 + 5))
        self.history: dict[str, str | None] = dict.fromkeys(options.streams, "0")  # own PEL first, then `>`
        self.claim_cursor = dict.fromkeys(options.streams, "0-0")
        self.trimmed = 0  # pending entries MAXLEN removed before they were processed
        self._turn = 0

    def ensure_groups(self) -> None:
        """Create each stream's group (and the stream) where missing; an existing group is left as it is."""
        for stream in self.options.streams:
            try:
                self.redis.xgroup_create(stream, self.options.group, id=self.options.start_id, mkstream=True)
                log.info("created group %s on %s at %s", self.options.group, stream, self.options.start_id)
            except redis.ResponseError as e:
                if "BUSYGROUP" not in str(e):
                    raise

    def _entries(self, reply: Any) -> list[Entry]:
        out = []
        for stream, items in reply or ():
            for entry_id, fields in items:
                out.append(Entry(_text(stream), _text(entry_id), fields or {}))
        return out

    def _share(self, streams: list[str], count: int) -> tuple[list[str], int]:
        """Which streams to ask and how many each: XREADGROUP's COUNT is per stream, and all of them together
        must stay within `count`. Streams take turns when there are more of them than free slots."""
        k = min(len(streams), count)
        start = self._turn % len(streams)
        self._turn += 1
        return (streams[start:] + streams[:start])[:k], count // k

    def read(self, count: int, block_ms: int) -> list[Entry]:
        """At most `count` entries: this consumer's own pending ones first (after a restart), then new ones."""
        history = [s for s, c in self.history.items() if c is not None]
        if history:
            streams, each = self._share(history, count)
            reply = self.redis.xreadgroup(self.options.group, self.options.consumer,
                                          {s: self.history[s] for s in streams}, count=each)  # fmt: skip
            entries = self._entries(reply)
            got = {e.stream for e in entries}
            for stream in streams:
                if stream not in got:
                    self.history[stream] = None  # own PEL read through: new entries from now on
            for e in entries:
                self.history[e.stream] = e.id
            if entries:
                self._counts(entries)
                return self._drop_trimmed(entries)
            if any(c is not None for c in self.history.values()):
                return []
        streams, each = self._share(list(self.options.streams), count)
        reply = self.redis.xreadgroup(self.options.group, self.options.consumer, dict.fromkeys(streams, NEW),
                                      count=each, block=block_ms)  # fmt: skip
        return self._entries(reply)

    def claim(self, count: int) -> list[Entry]:
        """Up to `count` entries that peers left idle past claim_idle_s, with their delivery counts."""
        idle_ms = int(self.options.claim_idle_s * 1000)
        claimed: list[Entry] = []
        for stream in self.options.streams:
            if len(claimed) >= count:
                break
            cursor, items, deleted = self.redis.xautoclaim(
                stream, self.options.group, self.options.consumer, idle_ms,
                start_id=self.claim_cursor[stream], count=count - len(claimed),
            )  # fmt: skip
            self.claim_cursor[stream] = _text(cursor)
            self.trimmed += len(deleted or ())
            claimed += [Entry(stream, _text(i), f or {}) for i, f in items]
        if claimed:
            self._counts(claimed)
        return self._drop_trimmed(claimed)

    def _counts(self, entries: list[Entry]) -> None:
        """Each entry's delivery count from the group's pending list (this read included)."""
        by_stream: dict[str, list[Entry]] = {}
        for e in entries:
            by_stream.setdefault(e.stream, []).append(e)
        for stream, group in by_stream.items():
            ids = sorted((e.id for e in group), key=lambda i: tuple(map(int, i.split("-"))))
            pending = self.redis.xpending_range(stream, self.options.group, ids[0], ids[-1], len(ids) + 64,
                                                consumername=self.options.consumer)  # fmt: skip
            counts = {_text(p["message_id"]): int(p["times_delivered"]) for p in pending}
            for e in group:
                e.deliveries = counts.get(e.id, e.deliveries)

    def _drop_trimmed(self, entries: list[Entry]) -> list[Entry]:
        """Pending entries whose data MAXLEN removed come back empty: acknowledge and count them."""
        gone = [e for e in entries if not e.fields]
        if gone:
            log.warning("%d pending entr(ies) were trimmed by MAXLEN before being processed", len(gone))
            self.trimmed += len(gone)
            self.ack(gone)
        return [e for e in entries if e.fields]

    def refresh(self, entries: Iterable[Entry]) -> None:
        """Reset the idle time of the entries this bridge holds, so no peer takes them over."""
        by_stream: dict[str, list[str]] = {}
        for e in entries:
            by_stream.setdefault(e.stream, []).append(e.id)
        for stream, ids in by_stream.items():
            self.redis.xclaim(stream, self.options.group, self.options.consumer, 0, ids, justid=True)

    def ack(self, entries: Iterable[Entry]) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for e in entries:
            pipe.xack(e.stream, self.options.group, e.id)
        pipe.execute()

    def dead_letter(self, entry: Entry, reason: str) -> str:
        """Move the entry, with its reason, to the dead-letter stream and acknowledge it, atomically."""
        target = self.options.dead_letter_stream(entry.stream)
        fields = {**entry.fields, b"source_stream": entry.stream, b"source_id": entry.id, b"reason": reason,
                  b"deliveries": str(entry.deliveries)}  # fmt: skip
        pipe = self.redis.pipeline(transaction=True)
        pipe.xadd(target, fields, maxlen=self.options.dead_letter_maxlen, approximate=True)
        pipe.xack(entry.stream, self.options.group, entry.id)
        pipe.execute()
        return target

    def lag(self) -> dict[str, tuple[int | None, int]]:
        """Per stream, the group's lag (entries not yet delivered; Redis 7) and pending count."""
        out: dict[str, tuple[int | None, int]] = {}
        for stream in self.options.streams:
            for g in self.redis.xinfo_groups(stream):
                if _text(g["name"]) == self.options.group:
                    lag = g.get("lag")
                    out[stream] = (None if lag is None else int(lag), int(g["pending"]))
        return out

    def close(self) -> None:
        self.redis.close()
