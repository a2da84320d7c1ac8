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


def test_missing_and_garbage(tmp_path):
    with pytest.raises(ShardError, match="missing token shard"):
        read_shard(tmp_path / "nope.bin")
    g = tmp_path / "g.bin"
    g.write_bytes(b"x" * (HEADER.size + 10))
    with pytest.raises(ShardError, match="bad magic"):
        read_shard(g)
