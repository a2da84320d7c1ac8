"""Shared fixtures: every test makes its own data (no network, no home directory)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

WORDS = (
    "the a one two three cat dog bird tree river stone house city king queen runs sees finds makes holds over under "
    "near with without and but because quickly slowly red green blue old new small large 0 1 2 3 4 5 6 7 8 9 . , ; ! ? "
    "café naïve 東京 ünïcode 😀"
).split()


def make_docs(n_docs: int, seed: int, long_every: int = 10) -> list[str]:
    """Random-word documents with some long ones (longer than a test row) and some unicode."""
    rng = np.random.default_rng(seed)
    docs = []
    for i in range(n_docs):
        n = int(rng.integers(400, 1500)) if i % long_every == 0 else int(rng.integers(5, 80))
        docs.append(" ".join(WORDS[j] for j in rng.integers(0, len(WORDS), n)))
    return docs


def write_parquet(path: Path, docs: list, column: str = "text") -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({column: docs}), path)
    return path


@pytest.fixture(autouse=True)
def _sigint_restored():
    """A library that ignores SIGINT in this process (seen once in the whole suite) would pass that on to every
    later subprocess, which then never sees a Ctrl-C: put back the handler each test found."""
    import signal

    handler = signal.getsignal(signal.SIGINT)
    yield
    if signal.getsignal(signal.SIGINT) is not handler:
        signal.signal(signal.SIGINT, handler)


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path, monkeypatch):
    """No test touches ~/.cache: AUTORESEARCH_HOME points into the test's tmp dir."""
    monkeypatch.setenv("AUTORESEARCH_HOME", str(tmp_path / "arhome"))
    monkeypatch.delenv("AUTORESEARCH_DATA_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory) -> Path:
    """A local corpus directory: two train parquet files and a val.jsonl."""
    import json

    root = tmp_path_factory.mktemp("corpus")
    write_parquet(root / "part_a.parquet", make_docs(150, 1))
    write_parquet(root / "part_b.parquet", make_docs(150, 2))
    with open(root / "val.jsonl", "w") as f:
        for doc in make_docs(40, 3):
            f.write(json.dumps({"text": doc}) + "\n")
    return root


def prepare_isolated(source: Path, tmp_path_factory, vocab_size: int = 512) -> Path:
    """Prepare `source` into a fresh data dir with its own AUTORESEARCH_HOME (for session- and module-scoped
    fixtures, which cannot use the per-test monkeypatch)."""
    from common.prepare import prepare

    old = os.environ.get("AUTORESEARCH_HOME")
    os.environ["AUTORESEARCH_HOME"] = str(tmp_path_factory.mktemp("home"))
    try:
        return prepare(str(source), tmp_path_factory.mktemp("data"), vocab_size=vocab_size)
    finally:
        if old is None:
            os.environ.pop("AUTORESEARCH_HOME")
        else:
            os.environ["AUTORESEARCH_HOME"] = old


@pytest.fixture(scope="session")
def prepared(small_corpus, tmp_path_factory) -> Path:
    """`small_corpus` prepared (tokenizer of 512 tokens + shards) into its own data dir."""
    return prepare_isolated(small_corpus, tmp_path_factory)
