import math

import numpy as np
import pytest

from common.evaluate import bits_per_byte, evaluate_bpb, nats_and_bytes, unigram_bpb


def test_hand_computed_value():
    # Tokens 0 (special, 0 bytes), 1 (1 byte), 2 (3 bytes). Targets [2, 0, 1, 2], losses [1, 5, 2, 0.5] nats.
    token_bytes = np.array([0, 1, 3])
    nats, nbytes = nats_and_bytes(
        np.array([1.0, 5.0, 2.0, 0.5], np.float32), np.array([2, 0, 1, 2]), token_bytes
    )
    assert nats == pytest.approx(3.5)  # the 5 nats on the special token are excluded
    assert nbytes == 7
    assert bits_per_byte(nats, nbytes) == pytest.approx(3.5 / (7 * math.log(2)))


def test_evaluate_is_independent_of_batch_size_and_matches_float64():
    rng = np.random.default_rng(0)
    vocab, T = 50, 16
    token_bytes = rng.integers(0, 4, vocab)
    rows = rng.integers(0, vocab, (13, T + 1)).astype(np.int32)
    table = rng.random((vocab, vocab)).astype(np.float32)  # a fixed "model": loss depends on (x, y)

    def loss_fn(x, y):
        return table[x, y].reshape(-1)

    ref_nats = sum(float(table[a, b]) for r in rows for a, b in zip(r[:-1], r[1:]) if token_bytes[b] > 0)
    ref_bytes = sum(int(token_bytes[b]) for r in rows for b in r[1:])
    ref = ref_nats / (math.log(2) * ref_bytes)
    for bs in (1, 4, 13, 100):
        assert evaluate_bpb(loss_fn, rows, bs, token_bytes) == pytest.approx(ref, rel=1e-12)


def test_errors_are_clear():
    with pytest.raises(ValueError, match="2 losses for 3 targets"):
        nats_and_bytes(np.zeros(2), np.zeros(3, int), np.ones(4))
    with pytest.raises(FloatingPointError):
        nats_and_bytes(np.array([np.nan]), np.array([1]), np.ones(4))
    with pytest.raises(ValueError, match="no bytes"):
        bits_per_byte(0.0, 0)


def test_unigram_baseline():
    token_bytes = np.array([0, 1, 1])
    counts = np.array([0, 3, 1])  # add-one: p = [1, 4, 2] / 7
    val = np.array([1, 2, 0])
    expect = -(math.log(4 / 7) + math.log(2 / 7)) / (2 * math.log(2))
    assert unigram_bpb(counts, val, token_bytes) == pytest.approx(expect)


def test_padded_chunks_cover_every_row_once():
    from common.evaluate import padded_chunks

    x = np.arange(7 * 3).reshape(7, 3)
    chunks = list(padded_chunks(x, x + 100, 3))
    assert [c[2] for c in chunks] == [3, 3, 1]
    assert all(c[0].shape == (3, 3) for c in chunks)  # one static shape for a compiled forward
    np.testing.assert_array_equal(np.concatenate([c[0][: c[2]] for c in chunks]), x)
    np.testing.assert_array_equal(chunks[-1][1][1:], 0)  # padding rows are zeros
