"""The simulator's clock: a heap of timed events, in microseconds.

Every event is a tuple of ints so that ordering is total and deterministic: by
time, then by the order events were posted (Xen raises a softirq and the
handler runs "now", after whatever the current handler is doing; a FIFO among
equal times models that). Timers that Xen re-arms or stops (the per-pCPU
ticker, the slice timer, a vCPU's end of burst) carry a generation number; an
event whose generation is stale is a timer that was stopped and is ignored.
"""

from __future__ import annotations

import heapq

SOFTIRQ = 0
TICK = 1
SLICE = 2
ACCT = 3
BURST_END = 4
WAKE = 5
RELEASE = 6
FORCED_END = 7
CALL = 8

Event = tuple[int, int, int, int, int]


class EventQueue:
    """(time, seq, kind, index, generation); ``index`` is a pCPU, a vCPU or a callback."""

    __slots__ = ("_heap", "_seq")

    def __init__(self) -> None:
        self._heap: list[Event] = []
        self._seq = 0

    def push(self, at_us: int, kind: int, index: int, gen: int = 0) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (at_us, self._seq, kind, index, gen))

    def pop_until(self, until_us: int) -> Event | None:
        """The next event at or before ``until_us``, or None (the event stays queued)."""
        heap = self._heap
        if not heap or heap[0][0] > until_us:
            return None
        return heapq.heappop(heap)

    def __len__(self) -> int:
        return len(self._heap)
