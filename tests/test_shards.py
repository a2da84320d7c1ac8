import numpy as np
import pytest

from common.shards import HEADER, ShardError, read_shard, write_shard

SHA = "ab" * 32


def test_round_trip(tmp_path):
    docs = [np.array([5, 6, 7]), np.array([], np.uint16), np.array([65535, 0])]
    p = tmp_path / "s.bin"
    assert write_shard(p, docs, 65536, SHA) == 5
    s = read_shard(p, SHA, 65536)
    assert s.num_docs == 3 and s.num_tokens == 5
    assert s.doc(0).tolist() == [5, 6, 7] and s.doc(1).tolist() == [] and s.doc(2).tolist() == [65535, 0]
    assert not list(tmp_path.glob("*.tmp"))


def test_truncated(tmp_path):
    p = tmp_path / "s.bin"
    write_shard(p, [np.arange(100)], 512, SHA)
    p.write_bytes(p.read_bytes()[:-3])
    with pytest.raises(ShardError, match=r"s\.bin.*truncated.*autoresearch prepare"):
        read_shard(p, SHA)


def test_other_tokenizer(tmp_path):
    p = tmp_path / "s.bin"
    write_shard(p, [np.arange(10)], 512, SHA)
    with pytest.raises(ShardError, match="another tokenizer"):
        read_shard(p, "cd" * 32)
    with pytest.raises(ShardError, match="vocab 512"):
        read_shard(p, SHA, 1024)
    with pytest.raises(ShardError, match="vocab 512"):  # larger than the tokenizer's: ids out of its range
        read_shard(p, SHA, 256)


def test_missing_and_garbage(tmp_path):
    with pytest.raises(ShardError, match="missing token shard"):
        read_shard(tmp_path / "nope.bin")
    g = tmp_path / "g.bin"
    g.write_bytes(b"x" * (HEADER.size + 10))
    with pytest.raises(ShardError, match="bad magic"):
        read_shard(g)


@pytest.mark.parametrize("offsets", [[0, 7, 3, 10], [1, 3, 7, 10]], ids=["decreasing", "first-not-zero"])
def test_corrupt_offsets(tmp_path, offsets):
    # Right size, right header, offsets that cannot be a document table: caught before any token is read.
    p = tmp_path / "s.bin"
    write_shard(p, [np.arange(3), np.arange(4), np.arange(3)], 512, SHA)
    raw = bytearray(p.read_bytes())
    raw[HEADER.size : HEADER.size + 32] = np.array(offsets, "<i8").tobytes()
    p.write_bytes(bytes(raw))
    with pytest.raises(ShardError, match=r"s\.bin has corrupt document offsets"):
        read_shard(p, SHA)


def test_a_failed_write_leaves_the_old_shard_whole(tmp_path, monkeypatch):
    from common import shards

    p = tmp_path / "s.bin"
    write_shard(p, [np.arange(10)], 512, SHA)
    before = p.read_bytes()

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(shards.os, "fsync", disk_full)  # fails after the bytes are written, before the rename
    with pytest.raises(OSError, match="No space"):
        write_shard(p, [np.arange(500)], 512, SHA)
    assert p.read_bytes() == before
