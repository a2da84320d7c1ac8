"""Prepared data as the training scripts see it: tokenizer facts, the train loader and the fixed val rows.

    data = PreparedData.open()                  # current data dir (see common/paths.py)
    for x, y, epoch in data.train_batches(B, T, seed=0): ...
    rows = data.val_rows(T, EVAL_TOKENS)        # (N, T+1) int32, identical for every backend and batch size

Every file is checked against the manifest's sha256 the first time it is used (then remembered by size and mtime).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np

from common import manifest as mf
from common import paths
from common.loader import DocumentIndex, Packer, Prefetcher, batches
from common.shards import ShardError, read_shard
from common.tokenizer import BOS, sha256_file

VERIFIED = ".verified.json"


class PreparedData:
    def __init__(self, data_dir: Path):
        self.dir = Path(data_dir)
        if not (self.dir / mf.MANIFEST).exists():
            raise FileNotFoundError(
                f"{self.dir} is not a prepared data directory (no manifest.json): {paths.PREPARE_HINT} first"
            )
        self.manifest = m = mf.load(self.dir)
        if "stats" not in m:
            raise ShardError(
                f"`autoresearch prepare` did not finish in {self.dir}: rerun it with the same --dataset to resume"
            )
        self._verified = self._load_verified()
        tok = m["tokenizer"]
        self.tokenizer_sha256: str = tok["sha256"]
        self.vocab_size: int = tok["vocab_size"]
        self._verify(self.dir / "tokenizer.json", self.tokenizer_sha256)
        self._verify(self.dir / "token_bytes.npy", tok["token_bytes_sha256"])
        self.token_bytes: np.ndarray = np.load(self.dir / "token_bytes.npy")
        vocab = json.loads((self.dir / "tokenizer.json").read_text())
        self.bos_id: int = next(t["id"] for t in vocab["added_tokens"] if t["content"] == BOS)
        self.train_shards = self._open("train")
        self.val_shards = self._open("val")
        self._save_verified()

    @classmethod
    def open(cls, data_dir: Path | None = None) -> PreparedData:
        return cls(Path(data_dir) if data_dir else paths.current_data_dir())

    @property
    def name(self) -> str:
        return self.manifest.get("dataset", self.dir.name)

    # -- verification -------------------------------------------------------------------------------------------

    def _load_verified(self) -> dict:
        try:
            return json.loads((self.dir / VERIFIED).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def _save_verified(self) -> None:
        tmp = self.dir / (VERIFIED + f".{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(self._verified))
            os.replace(tmp, self.dir / VERIFIED)
        except OSError:
            pass  # a read-only data dir: verify again next time

    def _verify(self, path: Path, sha256: str) -> None:
        if not path.exists():
            raise ShardError(
                f"missing {path}: rerun `autoresearch prepare` with the same --dataset to rebuild it"
            )
        st = path.stat()
        stamp = f"{st.st_size}|{st.st_mtime_ns}|{sha256}"
        if self._verified.get(str(path)) == stamp:
            return
        got = sha256_file(path)
        if got != sha256:
            raise ShardError(
                f"{path} is corrupt (sha256 {got[:12]}..., manifest says {sha256[:12]}...): delete it and rerun "
                "`autoresearch prepare` with the same --dataset"
            )
        self._verified[str(path)] = stamp

    def _open(self, role: str):
        entries = sorted(
            (e for e in self.manifest["shards"].values() if e["role"] == role), key=lambda e: e["path"]
        )
        out = []
        for e in entries:
            path = self.dir / e["path"]
            shard = read_shard(
                path, self.tokenizer_sha256, self.vocab_size
            )  # header, size and tokenizer checks
            self._verify(path, e["sha256"])
            out.append(shard)
        if not out:
            raise ShardError(f"no {role} shards in {self.dir}: rerun `autoresearch prepare`")
        return out

    # -- loaders ------------------------------------------------------------------------------------------------

    def train_batches(self, batch_size: int, seq_len: int, seed: int = 0, prefetch: int = 4):
        """Infinite (x, y, epoch) int32 batches of shape (batch_size, seq_len), produced in a background thread."""
        packer = Packer(DocumentIndex(self.train_shards), seq_len, self.bos_id, seed=seed)
        it = batches(packer, batch_size)
        return Prefetcher(it, prefetch) if prefetch else it

    def val_rows(self, seq_len: int, eval_tokens: int) -> np.ndarray:
        """The fixed val set: the val split's documents in order, packed into rows of seq_len+1 until the rows hold
        eval_tokens target tokens (eval_tokens // seq_len rows). Cached on disk, keyed by the val shards' sha256
        (a re-made shard, e.g. by another encoder, gets fresh rows)."""
        n_rows = max(1, eval_tokens // seq_len)
        val_shas = sorted(e["sha256"] for e in self.manifest["shards"].values() if e["role"] == "val")
        key = hashlib.sha256("".join([self.tokenizer_sha256, *val_shas]).encode()).hexdigest()[:12]
        cache = self.dir / "val" / f"val_T{seq_len}_E{eval_tokens}_{key}.npy"
        if cache.exists():
            rows = np.load(cache)
            if rows.shape[1] == seq_len + 1 and rows.dtype == np.int32:
                return rows
        # pool_size=1: plain in-order packing, so the rows hold the first eval_tokens tokens of the split.
        packer = Packer(
            DocumentIndex(self.val_shards), seq_len, self.bos_id, shuffle=False, pool_size=1, max_passes=1
        )
        rows = packer.rows(n_rows)
        if len(rows) < n_rows:
            print(
                f"warning: the val split holds only {len(rows) * seq_len:,} of the {eval_tokens:,} eval tokens the "
                "profile asks for; evaluating on all of it",
                file=sys.stderr,
            )
        if len(rows) == 0:
            raise ShardError(
                f"the val split in {self.dir} is empty: add validation text and rerun `autoresearch prepare`"
            )
        cache.parent.mkdir(exist_ok=True)
        tmp = cache.with_name(cache.name + f".{os.getpid()}.tmp.npy")
        np.save(tmp, rows)
        os.replace(tmp, cache)
        return rows
