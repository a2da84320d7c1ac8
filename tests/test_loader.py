import threading
from pathlib import Path

import numpy as np
import pytest

from common.loader import DocumentIndex, Packer, Prefetcher, batches
from common.shards import read_shard, write_shard

SHA = "00" * 32
BOS = 0


def make_shards(tmp_path: Path, seed=0, n_docs=200, long_every=7):
    rng = np.random.default_rng(seed)
    docs = []
    for i in range(n_docs):
        n = int(rng.integers(100, 400)) if i % long_every == 0 else int(rng.integers(1, 30))
        docs.append(rng.integers(1, 1000, n).astype(np.uint16))  # never 0 (BOS)
    half = n_docs // 2
    write_shard(tmp_path / "a.bin", docs[:half], 1000, SHA)
    write_shard(tmp_path / "b.bin", docs[half:], 1000, SHA)
    return [read_shard(tmp_path / "a.bin"), read_shard(tmp_path / "b.bin")], docs


def test_rows_start_with_bos_and_every_token_is_used_once_per_epoch(tmp_path):
    shards, docs = make_shards(tmp_path)
    total = sum(len(d) for d in docs)
    T = 64
    p = Packer(DocumentIndex(shards), T, BOS, seed=3, pool_size=32, max_passes=1)
    rows = p.rows(10_000)  # one pass; stops early when the documents run out
    assert rows.dtype == np.int32 and rows.shape[1] == T + 1
    assert (rows[:, 0] == BOS).all()
    # Nothing cropped, nothing duplicated: the rows hold a sub-multiset of the corpus missing only the final,
    # partial row's tokens.
    got = np.bincount(rows[rows != BOS], minlength=1000)
    want = np.bincount(np.concatenate(docs), minlength=1000)
    assert (got <= want).all()
    assert total - T < got.sum() <= total
    assert p.tokens_drawn == total and p.epoch == 2


def test_epochs_cycle_forever(tmp_path):
    shards, docs = make_shards(tmp_path)
    total = sum(len(d) for d in docs)
    p = Packer(DocumentIndex(shards), 64, BOS, seed=0, pool_size=32)
    rows = p.rows(3 * total // 64)
    assert len(rows) == 3 * total // 64 and p.epoch >= 3


def test_long_documents_are_continued_in_order(tmp_path):
    doc = np.arange(1, 301, dtype=np.uint16)  # one 300-token document, T=64
    write_shard(tmp_path / "a.bin", [doc], 1000, SHA)
    p = Packer(
        DocumentIndex([read_shard(tmp_path / "a.bin")]), 64, BOS, shuffle=False, pool_size=1, max_passes=1
    )
    rows = p.rows(10)
    assert len(rows) == 4  # 300 = 4 full rows of 64 + a partial row, which is dropped when the split runs out
    np.testing.assert_array_equal(rows[:, 1:].reshape(-1), doc[:256])  # in order, split only at row ends


def test_each_epoch_draws_a_new_order_of_every_document(tmp_path):
    # Documents of exactly T tokens fill a row each, so with a pool of one the rows show the draw order.
    T = 8
    docs = [np.full(T, i + 1, np.uint16) for i in range(20)]
    write_shard(tmp_path / "a.bin", docs, 1000, SHA)
    p = Packer(DocumentIndex([read_shard(tmp_path / "a.bin")]), T, BOS, seed=4, pool_size=1, max_passes=3)
    order = p.rows(100)[:, 1].reshape(3, 20)  # three passes, then the split runs out
    assert all(sorted(epoch) == list(range(1, 21)) for epoch in order.tolist())  # each a permutation
    assert len({tuple(epoch) for epoch in order.tolist()}) == 3  # and a different one every epoch


def test_deterministic_for_a_seed(tmp_path):
    shards, _ = make_shards(tmp_path)
    a = Packer(DocumentIndex(shards), 32, BOS, seed=1).rows(50)
    b = Packer(DocumentIndex(shards), 32, BOS, seed=1).rows(50)
    c = Packer(DocumentIndex(shards), 32, BOS, seed=2).rows(50)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_best_fit_packs_whole_short_documents(tmp_path):
    docs = [np.full(n, n, np.uint16) for n in (10, 5, 3, 20, 7)]  # value = length, to identify them
    write_shard(tmp_path / "a.bin", docs, 1000, SHA)
    p = Packer(DocumentIndex([read_shard(tmp_path / "a.bin")]), 23, BOS, shuffle=False)
    row = p.rows(1)[0]
    # Row of 24: BOS + the 20-token document, then 3 places left where no whole document fits (the 3-token one
    # needs 4 with its BOS), so the longest (10) is split: BOS + its first 2 tokens, the rest back to the pool.
    assert row[0] == BOS and (row[1:21] == 20).all()
    assert row[21] == BOS and (row[22:] == 10).all()
    # Next row: the pool is topped up with the next pass's first document (10 tokens), which fits best; then the
    # 8-token tail of the split document, with its own BOS; then the 3-token document fills the row exactly.
    row2 = p.rows(1)[0]
    np.testing.assert_array_equal(row2, [BOS] + [10] * 10 + [BOS] + [10] * 8 + [BOS] + [3] * 3)


def test_batches_views_and_prefetch(tmp_path):
    shards, _ = make_shards(tmp_path)
    p = Packer(DocumentIndex(shards), 16, BOS, seed=0)
    it = Prefetcher(batches(p, 4), depth=2)
    x, y, epoch = next(it)
    assert x.shape == y.shape == (4, 16) and epoch == 1
    np.testing.assert_array_equal(x[:, 1:], y[:, :-1])
    it.close()


def test_prefetch_surfaces_errors():
    def bad():
        yield 1
        raise RuntimeError("loader broke")

    it = Prefetcher(bad())
    assert next(it) == 1
    # From a helper thread, so a swallowed error fails the test instead of blocking it forever.
    got = []
    reader = threading.Thread(target=lambda: got.append(pytest.raises(RuntimeError, next, it)), daemon=True)
    reader.start()
    reader.join(timeout=10)
    assert got and got[0].match("loader broke"), "the consumer never saw the loader's error"
