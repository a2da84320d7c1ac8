"""Text sources: documents read from parquet (`text` column), .jsonl (`text` field) or .txt (one document per file).

Used by `prepare` for every dataset: downloads and the demo generator write parquet; a user's own directory may hold
any of the three. Empty and non-UTF-8 documents are skipped and counted, never fatal.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

TEXT_SUFFIXES = (".parquet", ".jsonl", ".txt")
VAL_STEM = "val"
BATCH_DOCS = 1024


class SourceError(ValueError):
    """Bad input data; the message names the file and what to do."""


@dataclass
class SkipCounts:
    empty: int = 0
    not_utf8: int = 0
    bad_json: int = 0
    examples: list[str] = field(default_factory=list)

    def note(self, kind: str, where: str) -> None:
        setattr(self, kind, getattr(self, kind) + 1)
        if len(self.examples) < 5:
            self.examples.append(f"{kind}: {where}")

    def total(self) -> int:
        return self.empty + self.not_utf8 + self.bad_json

    def to_dict(self) -> dict:
        return {
            "empty": self.empty,
            "not_utf8": self.not_utf8,
            "bad_json": self.bad_json,
            "examples": self.examples,
        }


def list_text_files(root: Path) -> list[Path]:
    """Text files under `root` (recursively), sorted, ignoring hidden and temporary files."""
    root = Path(root)
    if not root.exists():
        raise SourceError(
            f"dataset path {root} does not exist: pass a directory of .parquet, .jsonl or .txt files"
        )
    if root.is_file():
        raise SourceError(f"dataset path {root} is a file: pass the directory that holds it")
    files = sorted(
        p
        for p in root.rglob("*")
        if p.is_file()
        and p.suffix in TEXT_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )
    if not files:
        raise SourceError(f"no .parquet, .jsonl or .txt files under {root}: point --dataset at your text")
    return files


def is_val_file(path: Path) -> bool:
    return path.stem == VAL_STEM


def iter_batches(path: Path, skips: SkipCounts) -> Iterator[list[str]]:
    """Yield lists of documents from one file."""
    path = Path(path)
    if path.suffix == ".parquet":
        yield from _parquet_batches(path, skips)
    elif path.suffix == ".jsonl":
        yield from _jsonl_batches(path, skips)
    elif path.suffix == ".txt":
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            skips.note("not_utf8", str(path))
            return
        if text.strip():
            yield [text]
        else:
            skips.note("empty", str(path))
    else:
        raise SourceError(f"unsupported file type {path}: use .parquet, .jsonl or .txt")


def _parquet_batches(path: Path, skips: SkipCounts) -> Iterator[list[str]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:
        raise SourceError(f"cannot read parquet file {path} ({e}): replace or remove it") from e
    if "text" not in pf.schema_arrow.names:
        raise SourceError(
            f"parquet file {path} has no `text` column (columns: {', '.join(pf.schema_arrow.names)}): "
            "rename the document column to `text`"
        )
    kind = pf.schema_arrow.field("text").type
    for rg in range(pf.num_row_groups):
        col = pf.read_row_group(rg, columns=["text"]).column("text")
        if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
            values = []
            for i, raw in enumerate(col.to_pylist()):
                try:
                    values.append(raw.decode("utf-8") if raw is not None else None)
                except UnicodeDecodeError:
                    skips.note("not_utf8", f"{path} row group {rg} row {i}")
        else:
            values = col.to_pylist()
        batch = []
        for i, text in enumerate(values):
            if not text or not text.strip():
                skips.note("empty", f"{path} row group {rg} row {i}")
            else:
                batch.append(text)
        for i in range(0, len(batch), BATCH_DOCS):
            yield batch[i : i + BATCH_DOCS]


def _jsonl_batches(path: Path, skips: SkipCounts) -> Iterator[list[str]]:
    batch: list[str] = []
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                skips.note("not_utf8", f"{path}:{lineno}")
                continue
            try:
                obj = json.loads(line)
                text = obj["text"] if isinstance(obj, dict) else None
            except (json.JSONDecodeError, KeyError):
                text = None
            if not isinstance(text, str):
                skips.note("bad_json", f"{path}:{lineno} (need an object with a string `text` field)")
                continue
            if not text.strip():
                skips.note("empty", f"{path}:{lineno}")
                continue
            batch.append(text)
            if len(batch) >= BATCH_DOCS:
                yield batch
                batch = []
    if batch:
        yield batch


def held_out(text: str, permille: int) -> bool:
    """Deterministic val hold-out for corpora without a val file: by a hash of the document, so the split does not
    depend on file order or on how many documents came before."""
    return (
        int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little") % 1000
        < permille
    )
