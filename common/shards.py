"""Token shards: every document tokenized once at prepare time, stored as uint16 tokens plus document offsets.

Layout of a `.bin` shard (little-endian):

    0   magic  b"ARTOKEN1"
    8   u32    format version
    12  u32    vocab size
    16  u64    number of documents D
    24  u64    number of tokens N
    32  32 B   sha256 of tokenizer.json (raw digest)
    64  i64[D+1] document offsets into the token array (offsets[0] = 0, offsets[D] = N)
    ..  u16[N] tokens (no BOS: the packer adds one before every document)

A shard is written under a temporary name and renamed when complete, so a partial file is never taken for a shard.
Reading checks magic, version, vocab, tokenizer hash and exact file size; the manifest's sha256 catches corruption.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MAGIC = b"ARTOKEN1"
VERSION = 1
HEADER = struct.Struct("<8sIIQQ32s")  # 64 bytes
assert HEADER.size == 64


class ShardError(ValueError):
    """A shard that cannot be used; the message names the file and the command that fixes it."""


def _fix_hint(path: Path) -> str:
    return f"delete {path} and rerun `autoresearch prepare` with the same --dataset to rebuild it"


def write_shard(
    path: Path, docs: list[np.ndarray] | list[list[int]], vocab_size: int, tokenizer_sha256: str
) -> int:
    """Write documents (token id sequences) as one shard, atomically. Returns the number of tokens."""
    if vocab_size > 65536:
        raise ValueError(f"vocab size {vocab_size} does not fit uint16 tokens")
    lengths = np.fromiter((len(d) for d in docs), dtype=np.int64, count=len(docs))
    offsets = np.zeros(len(docs) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    tokens = (
        np.concatenate([np.asarray(d, dtype=np.uint16) for d in docs]) if docs else np.zeros(0, np.uint16)
    )
    header = HEADER.pack(
        MAGIC, VERSION, vocab_size, len(docs), int(offsets[-1]), bytes.fromhex(tokenizer_sha256)
    )
    tmp = path.with_name(path.name + ".tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(tmp, "wb") as f:
        f.write(header)
        f.write(offsets.astype("<i8").tobytes())
        f.write(tokens.astype("<u2").tobytes())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return int(offsets[-1])


@dataclass
class Shard:
    path: Path
    vocab_size: int
    offsets: np.ndarray  # int64 (D+1,)
    tokens: np.ndarray  # uint16 (N,), memory-mapped

    @property
    def num_docs(self) -> int:
        return len(self.offsets) - 1

    @property
    def num_tokens(self) -> int:
        return len(self.tokens)

    def doc(self, i: int) -> np.ndarray:
        return self.tokens[self.offsets[i] : self.offsets[i + 1]]


def read_shard(path: Path, tokenizer_sha256: str | None = None, vocab_size: int | None = None) -> Shard:
    path = Path(path)
    if not path.exists():
        raise ShardError(f"missing token shard {path}: rerun `autoresearch prepare` with the same --dataset")
    size = path.stat().st_size
    if size < HEADER.size:
        raise ShardError(f"token shard {path} is truncated ({size} bytes): {_fix_hint(path)}")
    with open(path, "rb") as f:
        magic, version, vocab, ndocs, ntok, tok_sha = HEADER.unpack(f.read(HEADER.size))
    if magic != MAGIC:
        raise ShardError(f"{path} is not a token shard (bad magic): {_fix_hint(path)}")
    if version != VERSION:
        raise ShardError(
            f"token shard {path} has format version {version}, expected {VERSION}: {_fix_hint(path)}"
        )
    if tokenizer_sha256 is not None and tok_sha.hex() != tokenizer_sha256:
        raise ShardError(
            f"token shard {path} was made with another tokenizer (sha256 {tok_sha.hex()[:12]}..., "
            f"current {tokenizer_sha256[:12]}...): {_fix_hint(path)}"
        )
    if vocab_size is not None and vocab != vocab_size:
        raise ShardError(
            f"token shard {path} has vocab {vocab}, tokenizer has {vocab_size}: {_fix_hint(path)}"
        )
    expected = HEADER.size + 8 * (ndocs + 1) + 2 * ntok
    if size != expected:
        raise ShardError(
            f"token shard {path} is {size} bytes, expected {expected} (truncated?): {_fix_hint(path)}"
        )
    offsets = np.fromfile(path, dtype="<i8", count=ndocs + 1, offset=HEADER.size)
    if offsets[0] != 0 or offsets[-1] != ntok or np.any(np.diff(offsets) < 0):
        raise ShardError(f"token shard {path} has corrupt document offsets: {_fix_hint(path)}")
    tokens = np.memmap(path, dtype="<u2", mode="r", offset=HEADER.size + 8 * (ndocs + 1), shape=(ntok,))
    return Shard(path, vocab, offsets, tokens)
