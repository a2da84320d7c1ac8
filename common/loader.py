"""The training loader: BOS-aligned best-fit packing of whole documents into int32 rows of T+1 tokens.

Every row starts with BOS and has no padding. Documents are taken in a seeded random order per epoch and packed
best-fit: the longest pending segment that fits the space left goes in next. Unlike upstream, nothing is thrown
away: a document longer than a row is cut into row-sized segments, and when no pending segment fits the space left
the longest one is split and its tail goes back into the pool (with its own BOS), so every token of every document
is trained on once per epoch. (Upstream crops the document and discards the rest: on long-document corpora that
loses most of the data.)
"""

from __future__ import annotations

import bisect
import queue
import threading
from collections.abc import Iterator

import numpy as np

from common.shards import Shard


class DocumentIndex:
    """All documents of a split: (shard, start, length) triples over memory-mapped shards."""

    def __init__(self, shards: list[Shard]):
        self.shards = shards
        self.shard_of = np.concatenate([np.full(s.num_docs, i, np.int32) for i, s in enumerate(shards)])
        self.start = np.concatenate([s.offsets[:-1] for s in shards])
        self.length = np.concatenate([np.diff(s.offsets) for s in shards])
        keep = self.length > 0
        self.shard_of, self.start, self.length = self.shard_of[keep], self.start[keep], self.length[keep]

    def __len__(self) -> int:
        return len(self.length)

    @property
    def num_tokens(self) -> int:
        return int(self.length.sum())


class Packer:
    """Packs documents into rows: `rows(n)` returns (n, T+1) int32. Cycles over epochs forever unless max_passes
    is set (the val set makes one pass; its last, partial row is dropped)."""

    def __init__(
        self,
        docs: DocumentIndex,
        seq_len: int,
        bos_id: int,
        seed: int = 0,
        shuffle: bool = True,
        pool_size: int = 1024,
        max_passes: int | None = None,
    ):
        if len(docs) == 0:
            raise ValueError("no documents to pack")
        self.docs, self.row_len, self.bos = docs, seq_len + 1, bos_id
        # The pool never holds more than about one pass, so epochs stay apart even on a tiny corpus.
        self.seed, self.shuffle, self.pool_size, self.max_passes = (
            seed,
            shuffle,
            min(pool_size, len(docs)),
            max_passes,
        )
        self._pass = 0  # passes over the document order drawn into the pool so far
        self._order: np.ndarray = np.zeros(0, np.int64)
        self._next = 0
        # Pending segments, sorted by length: (length, serial) keys plus payloads (shard, start) by serial.
        self._keys: list[tuple[int, int]] = []
        self._payload: dict[int, tuple[int, int]] = {}
        self._serial = 0
        self.tokens_drawn = 0  # document tokens placed in rows so far

    def _draw(self) -> bool:
        if self._next >= len(self._order):
            if self.max_passes is not None and self._pass >= self.max_passes:
                return False
            self._pass += 1
            n = len(self.docs)
            if self.shuffle:
                self._order = np.random.default_rng([self.seed, self._pass]).permutation(n)
            else:
                self._order = np.arange(n)
            self._next = 0
        d = int(self._order[self._next])
        self._next += 1
        shard, start, length = int(self.docs.shard_of[d]), int(self.docs.start[d]), int(self.docs.length[d])
        # Cut long documents into segments that fill a whole row (BOS + T tokens).
        cap = self.row_len - 1
        for off in range(0, length, cap):
            self._push(shard, start + off, min(cap, length - off))
        return True

    @property
    def epoch(self) -> int:
        """1-based epoch by tokens consumed (the pool draws ahead of what rows have used)."""
        return 1 + self.tokens_drawn // max(self.docs.num_tokens, 1)

    def _push(self, shard: int, start: int, length: int) -> None:
        self._serial += 1
        bisect.insort(self._keys, (length, self._serial))
        self._payload[self._serial] = (shard, start)

    def _pop(self, index: int) -> tuple[int, int, int]:
        length, serial = self._keys.pop(index)
        shard, start = self._payload.pop(serial)
        return shard, start, length

    def _fill(self, row: np.ndarray) -> bool:
        pos, L = 0, self.row_len
        shards = self.docs.shards
        while pos < L:
            while len(self._keys) < self.pool_size and self._draw():
                pass
            if not self._keys:
                return False
            space = L - pos
            # Longest segment with BOS + tokens <= space; among equals the oldest, so a long document's segments
            # come out in order.
            i = bisect.bisect_right(self._keys, (space - 1, 1 << 62)) - 1
            if i >= 0:
                shard, start, n = self._pop(bisect.bisect_left(self._keys, (self._keys[i][0], 0)))
            else:
                # Nothing fits: split the longest (oldest) segment; its tail returns to the pool.
                shard, start, length = self._pop(bisect.bisect_left(self._keys, (self._keys[-1][0], 0)))
                n = space - 1
                self._push(shard, start + n, length - n) if length > n else None
            row[pos] = self.bos
            if n > 0:
                row[pos + 1 : pos + 1 + n] = shards[shard].tokens[start : start + n]
            self.tokens_drawn += n
            pos += n + 1
        return True

    def rows(self, n: int) -> np.ndarray:
        out = np.empty((n, self.row_len), dtype=np.int32)
        for r in range(n):
            if not self._fill(out[r]):
                return out[:r]
        return out


def batches(packer: Packer, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray, int]]:
    """Infinite (x, y, epoch): x = rows[:, :-1], y = rows[:, 1:], views of one (B, T+1) int32 array."""
    while True:
        rows = packer.rows(batch_size)
        yield rows[:, :-1], rows[:, 1:], packer.epoch


class Prefetcher:
    """Runs an iterator in a background thread, `depth` items ahead, so packing overlaps the device's work."""

    def __init__(self, it: Iterator, depth: int = 4):
        self._q: queue.Queue = queue.Queue(maxsize=depth)
        self._it = it
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="autoresearch-loader")
        self._thread.start()

    def _run(self) -> None:
        try:
            for item in self._it:
                while not self._stop.is_set():
                    try:
                        self._q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    return
        except BaseException as e:  # surface loader errors in the consumer
            self._q.put(e)

    def __iter__(self):
        return self

    def __next__(self):
        item = self._q.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        self._stop.set()
