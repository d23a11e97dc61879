"""The per-stream state of a serving model: one DetectionStream per stream id.

:class:`StreamTable` knows nothing of Triton: the model hands it a stream id
(the sequence's correlation id), the START/END flags and the frame, and gets
back the detections that became ready. A stream whose client stops sending
is dropped after ``idle_timeout_s`` without a request (``expire()``, called
by the model on every request and by a timer), so a vanished client does not
hold memory for ever. The clock is injectable for tests.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..runtime.outputs import Detections


class StreamError(ValueError):
    """A request the table refuses: unknown stream, bad frame. Only that request fails."""


@dataclass
class _Entry:
    stream: object  # a vidtrt.api.DetectionStream (or anything with push/flush)
    last_seen: float
    busy: bool = False


@dataclass
class TableCounts:
    live: int
    started: int
    ended: int
    expired: int


class StreamTable:
    """Streams by id. ``open_stream()`` makes a fresh stream (``detector.stream``).

    ``handle(stream_id, frame, start=, end=)``: ``start`` begins the stream
    (replacing one of the same id, whose state is dropped); a request without
    ``start`` must name a live stream. ``frame`` (BGR uint8 (H, W, 3) or None)
    is pushed; ``end`` then flushes the stream's waiting frames into the
    result and frees its state at once. A frame the stream refuses raises
    :class:`StreamError` and leaves the stream as it was (or, with ``end``,
    still ends it); so does ``bad_frame``, the reason a frame that could
    not be decoded was refused. ``on_change(counts)`` is called after every change of
    the counts (for metrics).
    """

    def __init__(
        self,
        open_stream: Callable[[], object],
        idle_timeout_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[TableCounts], None] | None = None,
    ):
        if not idle_timeout_s > 0:
            raise ValueError(f"idle_timeout_s must be > 0, got {idle_timeout_s!r}")
        self._open_stream = open_stream
        self.idle_timeout_s = float(idle_timeout_s)
        self._clock = clock
        self._on_change = on_change
        self._entries: dict[int, _Entry] = {}
        self._lock = threading.Lock()  # the table only; frames run outside it
        self._started = self._ended = self._expired = 0

    # ------------------------------------------------------------ queries

    def __contains__(self, stream_id: int) -> bool:
        with self._lock:
            return stream_id in self._entries

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def counts(self) -> TableCounts:
        with self._lock:
            return self._counts()

    def _counts(self) -> TableCounts:
        return TableCounts(len(self._entries), self._started, self._ended, self._expired)

    # ------------------------------------------------------------ requests

    def handle(
        self, stream_id: int, frame: np.ndarray | None, *, start: bool = False, end: bool = False, bad_frame: str | None = None
    ) -> list[Detections]:
        self.expire()
        entry = self._claim(stream_id, start)
        results: list[Detections] = []
        error: StreamError | None = None
        try:
            if bad_frame is not None:  # the frame could not even be read: the request fails, the stream goes on
                error = StreamError(f"stream {stream_id}: {bad_frame}")
            elif frame is not None:
                try:
                    results += entry.stream.push(frame)
                except ValueError as err:  # the stream refused the frame and is unchanged
                    error = StreamError(f"stream {stream_id}: {err}")
            elif not end:
                error = StreamError(f"stream {stream_id}: the request carries no frame (only an END request may be empty)")
            if end:
                results += entry.stream.flush()
        finally:
            self._release(stream_id, entry, end)
        if error is not None:
            if end:
                raise StreamError(f"{error}; the stream was ended all the same (its waiting frames were dropped)")
            raise error
        return results

    def _claim(self, stream_id: int, start: bool) -> _Entry:
        with self._lock:
            entry = self._entries.get(stream_id)
            if entry is not None and entry.busy:
                raise StreamError(f"stream {stream_id} already has a request running; send a stream's frames one at a time")
            if start:
                # A START for a live id begins a new video; the old state goes.
                entry = _Entry(self._open_stream(), self._clock())
                self._entries[stream_id] = entry
                self._started += 1
                counts = self._counts()
            elif entry is None:
                raise StreamError(
                    f"stream {stream_id} has no state here: it was never started (START flag), it has ended, "
                    f"or it sent nothing for more than {self.idle_timeout_s:g} s and expired"
                )
            else:
                counts = None
            entry.busy = True
            entry.last_seen = self._clock()
        if counts is not None:
            self._changed(counts)
        return entry

    def _release(self, stream_id: int, entry: _Entry, end: bool) -> None:
        with self._lock:
            entry.busy = False
            entry.last_seen = self._clock()
            if not end:
                return
            if self._entries.get(stream_id) is entry:
                del self._entries[stream_id]
            self._ended += 1
            counts = self._counts()
        self._changed(counts)

    def expire(self) -> list[int]:
        """Drops the streams idle for longer than the timeout; returns their ids."""
        with self._lock:
            now = self._clock()
            gone = [
                stream_id
                for stream_id, entry in self._entries.items()
                if not entry.busy and now - entry.last_seen > self.idle_timeout_s
            ]
            for stream_id in gone:
                del self._entries[stream_id]
            self._expired += len(gone)
            counts = self._counts()
        if gone:
            self._changed(counts)
        return gone

    def clear(self) -> None:
        """Drops every stream (the model is unloading)."""
        with self._lock:
            self._entries.clear()
            counts = self._counts()
        self._changed(counts)

    def _changed(self, counts: TableCounts) -> None:
        if self._on_change is not None:
            self._on_change(counts)


class ExpiryTimer:
    """Calls ``table.expire()`` every ``period_s`` on a daemon thread, so that
    idle streams are freed even when no request comes."""

    def __init__(self, table: StreamTable, period_s: float):
        self._table = table
        self._period_s = period_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="vidtrt-stream-expiry", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self._period_s):
            self._table.expire()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
