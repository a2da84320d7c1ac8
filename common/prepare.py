"""`autoresearch prepare`: source text -> tokenizer -> token shards, resumable at every step.

    autoresearch prepare --dataset demo                 # offline, generated here, seconds
    autoresearch prepare --dataset climbmix --num-shards 10
    autoresearch prepare --dataset tinystories
    autoresearch prepare --dataset ~/my_corpus          # .parquet (`text` column), .jsonl or .txt files

Layout of a data directory (<home>/<dataset>/ unless --data-dir):

    text/                downloaded or generated parquet text shards (local corpora are read in place)
    tokenizer.json       HF tokenizers byte-level BPE, trained on the training split only
    token_bytes.npy      UTF-8 byte length per token id (0 for specials)
    tokens/*.bin         uint16 token shards (see common/shards.py)
    val/                 cached val rows per (MAX_SEQ_LEN, EVAL_TOKENS)
    manifest.json        sha256 of all of the above; updated after each step, so a rerun resumes
"""

from __future__ import annotations

import contextlib
import hashlib
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from common import manifest as mf
from common import paths
from common.evaluate import unigram_bpb
from common.shards import read_shard, write_shard
from common.sources import SkipCounts, SourceError, held_out, is_val_file, iter_batches, list_text_files
from common.tokenizer import (
    DEFAULT_VOCAB_SIZE,
    ENCODER,
    TRAIN_DOC_CAP,
    Tokenizer,
    save_tokenizer,
    sha256_file,
    train_tokenizer,
)

REMOTE = ("climbmix", "tinystories")
HELD_OUT_PERMILLE = 10  # 1% of documents held out as val when a local corpus has no val.* file


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def dataset_name(dataset: str) -> str:
    if dataset in ("demo", *REMOTE):
        return dataset
    path = Path(dataset).expanduser().resolve()
    return f"{path.name or 'corpus'}-{hashlib.sha256(str(path).encode()).hexdigest()[:8]}"


def check_dataset(dataset: str, data_dir: Path | None = None) -> None:
    """Fail before anything is written: an unknown name (with the nearest known one), a corpus path that does not
    exist or holds no text, a --data-dir that is a file."""
    if data_dir is not None and Path(data_dir).expanduser().is_file():
        raise SourceError(f"--data-dir {data_dir} is a file: give a directory (it is created if missing)")
    if dataset in ("demo", *REMOTE):
        return
    path = Path(dataset).expanduser()
    if not path.exists():
        import difflib

        known = ["climbmix", "tinystories", "demo"]
        guess = difflib.get_close_matches(dataset.lower(), known, n=1, cutoff=0.6)
        if guess and "/" not in dataset:
            raise SourceError(f"unknown dataset {dataset!r}: did you mean `--dataset {guess[0]}`?")
        raise SourceError(
            f"unknown dataset {dataset!r}: no such name or path. Choose {', '.join(known)}, "
            "or a directory of .parquet, .jsonl or .txt files"
            if "/" not in dataset and not dataset.startswith(("~", "."))
            else f"dataset path {dataset} does not exist: pass a directory of .parquet, .jsonl or .txt files "
            f"(or one of {', '.join(known)})"
        )
    list_text_files(path)  # raises if it is a file or holds no text


def _unmake(data_dir: Path) -> None:
    """Remove a data directory this run created if it holds no file worth keeping for a resume."""
    import shutil

    if not any(p.is_file() and p.name != mf.MANIFEST for p in data_dir.rglob("*")):
        shutil.rmtree(data_dir, ignore_errors=True)


def _check_online(dataset: str) -> None:
    from common import download

    if not download.reachable():
        raise SourceError(
            f"cannot reach {download.hf_base()} to download {dataset} (offline?). {download.OFFLINE_ADVICE} "
            f"Or set ${download.HF_BASE_ENV} to a reachable mirror and rerun."
        )


def prepare(
    dataset: str = "demo",
    data_dir: Path | None = None,
    vocab_size: int = DEFAULT_VOCAB_SIZE,
    num_shards: int = 10,
    workers: int = 8,
    max_tokenizer_chars: int = 1_000_000_000,
) -> Path:
    """Prepare `dataset` into `data_dir` and make it the current data directory. Returns the data directory.
    A failure before any data was written leaves no directory behind."""
    check_dataset(dataset, data_dir)
    data_dir = Path(data_dir).expanduser() if data_dir else paths.dataset_dir(dataset_name(dataset))
    created = not data_dir.exists()
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        return _prepare(dataset, data_dir, vocab_size, num_shards, workers, max_tokenizer_chars)
    except BaseException:
        if created:
            _unmake(data_dir)
        raise


def _prepare(dataset, data_dir, vocab_size, num_shards, workers, max_tokenizer_chars) -> Path:
    t0 = time.time()
    log(f"prepare: dataset {dataset} -> {data_dir}")
    m = mf.load(data_dir)
    m["dataset"] = dataset

    train_files, val_files = _sources(dataset, data_dir, num_shards, workers)
    m["text"] = {
        "train": [{"path": str(p), "sha256": _cached_sha(m, p)} for p in train_files],
        "val": [{"path": str(p), "sha256": _cached_sha(m, p)} for p in val_files],
        "held_out_permille": HELD_OUT_PERMILLE if not val_files else 0,
    }
    mf.save(data_dir, m)

    tok_sha = _ensure_tokenizer(m, data_dir, train_files, bool(val_files), vocab_size, max_tokenizer_chars)
    _ensure_shards(m, data_dir, train_files, val_files, tok_sha)
    _stats(m, data_dir)
    mf.save(data_dir, m)
    paths.set_current(data_dir)
    s = m["stats"]
    log(
        f"prepare: done in {time.time() - t0:.1f}s: {s['train_tokens']:,} train tokens in {s['train_docs']:,} documents, "
        f"{s['val_tokens']:,} val tokens; unigram baseline {s['unigram_bpb']:.3f} bpb; skipped {s['skipped']['empty']} "
        f"empty, {s['skipped']['not_utf8']} non-UTF-8, {s['skipped']['bad_json']} bad JSON documents"
    )
    log(epoch_note(s["train_tokens"]))
    return data_dir


def epoch_note(train_tokens: int) -> str:
    """How many optimizer steps of each profile one pass over the train split feeds: past that, a run trains on
    repeated data and val_bpb starts to reward memorisation (the summary's `epochs` counts the passes)."""
    from common.profiles import PROFILES

    steps = ", ".join(f"{name} {train_tokens // p.total_batch_size:,}" for name, p in PROFILES.items())
    return (
        f"prepare: one pass over the {train_tokens:,} train tokens is this many steps per profile: {steps}. A run "
        "past that repeats data (the summary's epochs says how many passes; more than 1 warns)"
    )


# ----------------------------------------------------------------------------------------------------------------
# Sources


def _sources(dataset: str, data_dir: Path, num_shards: int, workers: int) -> tuple[list[Path], list[Path]]:
    """(train text files, val text files); an empty val list means: hold out documents by hash."""
    if dataset == "demo":
        from common.demo import write_demo_corpus

        text_dir = data_dir / "text"
        val = text_dir / "val.parquet"
        train = sorted(text_dir.glob("shard_*.parquet"))
        if not (val.exists() and train):
            log("prepare: generating the demo corpus")
            train, val = write_demo_corpus(text_dir)
        return list(train), [val]
    if dataset in REMOTE:
        from common import download

        text_dir = data_dir / "text"
        if dataset == "climbmix":
            train_remote, val_remote = download.climbmix_files(num_shards, text_dir)
        else:
            train_remote, val_remote = download.tinystories_files(text_dir)
        val_remote = (
            [] if val_remote is None else [val_remote]
        )  # tinystories has no val file: hold out by hash
        missing = [f for f in [*train_remote, *val_remote] if not f.dest.exists()]
        if missing:  # seconds offline, where the downloads' retries take half a minute to give up
            _check_online(dataset)
        log(
            f"prepare: downloading {len(missing)} of {len(train_remote) + len(val_remote)} files to {text_dir}"
        )
        download.download_all([*train_remote, *val_remote], workers=workers)
        return [f.dest for f in train_remote], [f.dest for f in val_remote]
    files = list_text_files(Path(dataset).expanduser())
    val = [p for p in files if is_val_file(p)]
    train = [p for p in files if not is_val_file(p)]
    if not train:
        raise SourceError(f"{dataset} holds only a val file: add training text beside it")
    return train, val


def _cached_sha(m: dict, path: Path) -> str:
    """sha256 of a text file, reusing the manifest's value when size and mtime are unchanged."""
    st = path.stat()
    key = f"{path}|{st.st_size}|{st.st_mtime_ns}"
    cache = m.setdefault("sha_cache", {})
    if key not in cache:
        cache[key] = sha256_file(path)
    return cache[key]


def _documents(files: list[Path], skips: SkipCounts, keep) -> Iterator[list[str]]:
    for path in files:
        for batch in iter_batches(path, skips):
            kept = [d for d in batch if keep(d)]
            if kept:
                yield kept


# ----------------------------------------------------------------------------------------------------------------
# Tokenizer


def _ensure_tokenizer(m, data_dir, train_files, has_val_file, vocab_size, max_chars) -> str:
    inputs = {"train": [e["sha256"] for e in m["text"]["train"]], "vocab_size": vocab_size}
    tok_path = data_dir / "tokenizer.json"
    entry = m.get("tokenizer")
    if (
        entry
        and entry.get("inputs") == inputs
        and tok_path.exists()
        and sha256_file(tok_path) == entry["sha256"]
    ):
        log(f"prepare: tokenizer up to date ({entry['vocab_size']} tokens)")
        return entry["sha256"]
    m.pop("shards", None)  # shards made with another tokenizer are void
    log(f"prepare: training a {vocab_size}-token BPE on the training split")
    t0 = time.time()
    keep = (lambda d: True) if has_val_file else (lambda d: not held_out(d, HELD_OUT_PERMILLE))
    read = {"chars": 0}

    def texts() -> Iterator[str]:
        for batch in _documents(train_files, SkipCounts(), keep):
            for doc in batch:
                read["chars"] += min(len(doc), TRAIN_DOC_CAP)
                yield doc

    def status(elapsed: float) -> str:
        # The BPE reads the text, then computes merges, with no progress of its own: what it has read so far.
        cap = f" (it stops at {max_chars / 1e6:,.0f}M)" if read["chars"] < max_chars else " (the cap)"
        return f"prepare: training the BPE, {elapsed:.0f}s so far: {read['chars'] / 1e6:,.1f}M characters read{cap}"

    with _heartbeat(status):
        tok = train_tokenizer(texts(), vocab_size, max_chars)
    sha = save_tokenizer(tok, data_dir)
    actual = tok.get_vocab_size(with_added_tokens=True)
    if actual < vocab_size:
        log(
            f"prepare: the corpus supports only {actual} of the {vocab_size} requested tokens; using {actual}"
        )
    m["tokenizer"] = {
        "sha256": sha,
        "vocab_size": actual,
        "inputs": inputs,
        "token_bytes_sha256": sha256_file(data_dir / "token_bytes.npy"),
    }
    mf.save(data_dir, m)
    log(f"prepare: tokenizer trained in {time.time() - t0:.1f}s")
    return sha


@contextlib.contextmanager
def _heartbeat(status, every: float = 5.0):
    """Log status(elapsed seconds) every `every` seconds while the block runs (a wait with no progress of its own)."""
    done, t0 = threading.Event(), time.time()

    def beat() -> None:
        while not done.wait(every):
            log(status(time.time() - t0))

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()


def _eta(seconds: float) -> str:
    return f"{seconds:.0f}s" if seconds < 120 else f"{seconds / 60:.0f} min"


def _rows(files: list[Path]) -> int | None:
    """Documents in these files if cheap to know (parquet metadata), for a tokenizing estimate; else None."""
    import pyarrow.parquet as pq

    try:
        return (
            sum(pq.ParquetFile(p).metadata.num_rows for p in files)
            if all(p.suffix == ".parquet" for p in files)
            else None
        )
    except Exception:
        return None


# ----------------------------------------------------------------------------------------------------------------
# Token shards


def _ensure_shards(m, data_dir, train_files, val_files, tok_sha) -> None:
    """One token shard per text file (plus its held-out val part when the corpus has no val file), so progress is
    saved file by file."""
    tok = Tokenizer.load(data_dir / "tokenizer.json")
    shards = m.setdefault("shards", {})
    skipped = m.setdefault("skipped", {})
    held = not val_files
    # (source files, {role: shard name})
    jobs = [
        ([p], {"train": f"train_{i:05d}", **({"val": f"val_{i:05d}"} if held else {})})
        for i, p in enumerate(train_files)
    ]
    if not held:
        jobs.append((val_files, {"val": "val"}))
    expected = {name: [str(p) for p in files] for files, names in jobs for name in names.values()}
    # Forget shards whose sources changed (another --num-shards, a changed corpus) or whose file is gone.
    for name in list(shards):
        e = shards[name]
        if (
            expected.get(name) != e["sources"]
            or e["tokenizer_sha256"] != tok_sha
            or e.get("encoder") != ENCODER
            or not (data_dir / e["path"]).exists()
        ):
            del shards[name]

    todo = [
        (n, files, names)
        for n, (files, names) in enumerate(jobs, 1)
        if not all(x in shards for x in names.values())
    ]
    # Progress is measured in bytes of source text (a file's share), and inside a parquet file in documents.
    sizes = {n: sum(p.stat().st_size for p in files) for n, files, _ in todo}
    total_size, done_size = max(sum(sizes.values()), 1), 0
    t0, done_tokens, last_log = time.time(), 0, time.time()
    for n, files, names in todo:
        skips = SkipCounts()
        docs: dict[str, list[np.ndarray]] = {role: [] for role in names}
        only_role = next(iter(names))
        rows = _rows(files) if sizes[n] > 50e6 else None
        for batch in _documents(files, skips, lambda d: True):
            for text, ids in zip(batch, tok.encode_batch(batch)):
                role = ("val" if held_out(text, HELD_OUT_PERMILLE) else "train") if held else only_role
                docs[role].append(np.asarray(ids, dtype=np.uint16))
                done_tokens += len(ids)
            if time.time() - last_log > 5:  # progress inside large files (tinystories is one 640 MB file)
                last_log = time.time()
                n_docs = sum(map(len, docs.values()))
                inside = min(1.0, (n_docs + skips.total()) / rows) if rows else 0.0
                frac = (done_size + inside * sizes[n]) / total_size
                left = f", ~{_eta((last_log - t0) * (1 - frac) / frac)} left" if frac > 0 else ""
                log(
                    f"prepare: tokenizing file {n}/{len(jobs)}: {n_docs:,} docs, {100 * frac:.0f}% of the text, "
                    f"{done_tokens / (last_log - t0) / 1e6:.2f}M tokens/s{left}"
                )
        for role, name in names.items():
            path = data_dir / "tokens" / f"{name}.bin"
            ntok = write_shard(path, docs[role], tok.vocab_size, tok_sha)
            shards[name] = {
                "path": str(path.relative_to(data_dir)),
                "role": role,
                "sources": expected[name],
                "sha256": sha256_file(path),
                "num_docs": len(docs[role]),
                "num_tokens": ntok,
                "tokenizer_sha256": tok_sha,
                "encoder": ENCODER,
            }
        skipped[next(iter(names.values()))] = skips.to_dict()
        mf.save(data_dir, m)  # after every file: Ctrl-C loses at most the file in progress
        done_size += sizes[n]
        elapsed = max(time.time() - t0, 1e-9)
        if (
            len(todo) <= 20 or n == todo[-1][0] or time.time() - last_log > 5
        ):  # not a line per file of thousands
            last_log = time.time()
            left = (total_size - done_size) / done_size * elapsed if done_size else 0
            log(
                f"prepare: tokenized {n}/{len(jobs)} files ({done_tokens:,} tokens, {done_tokens / elapsed / 1e6:.2f}M "
                f"tokens/s{f', ~{_eta(left)} left' if done_size < total_size else ''})"
            )
    if not any(e["role"] == "val" and e["num_tokens"] > 0 for e in shards.values()):
        raise SourceError(
            "too little text for a validation split: no validation documents. Add a val.parquet/.jsonl/.txt file "
            "or more documents (1% of documents are held out when there is no val file)"
        )
    if not any(e["role"] == "train" and e["num_tokens"] > 0 for e in shards.values()):
        raise SourceError("no training documents left after holding out the validation split: add more text")


def _stats(m: dict, data_dir: Path) -> None:
    shards = m["shards"]
    vocab = m["tokenizer"]["vocab_size"]
    counts = np.zeros(vocab, dtype=np.int64)
    for e in shards.values():
        if e["role"] == "train":
            counts += np.bincount(read_shard(data_dir / e["path"]).tokens, minlength=vocab)
    val_tokens = np.concatenate(
        [read_shard(data_dir / e["path"]).tokens for e in shards.values() if e["role"] == "val"]
    )
    token_bytes = np.load(data_dir / "token_bytes.npy")
    totals: dict[str, int] = {"empty": 0, "not_utf8": 0, "bad_json": 0}
    for s in m.get("skipped", {}).values():
        for k in totals:
            totals[k] += s[k]
    m["stats"] = {
        "train_tokens": int(sum(e["num_tokens"] for e in shards.values() if e["role"] == "train")),
        "train_docs": int(sum(e["num_docs"] for e in shards.values() if e["role"] == "train")),
        "val_tokens": int(len(val_tokens)),
        "val_docs": int(sum(e["num_docs"] for e in shards.values() if e["role"] == "val")),
        "unigram_bpb": unigram_bpb(counts, val_tokens.astype(np.int64), token_bytes),
        "skipped": totals,
    }
