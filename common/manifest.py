"""manifest.json: what a data directory holds, with the sha256 of every file, written atomically after each step so
an interrupted `prepare` resumes where it stopped."""

from __future__ import annotations

import json
import os
from pathlib import Path

MANIFEST = "manifest.json"
FORMAT = 1


def load(data_dir: Path) -> dict:
    path = Path(data_dir) / MANIFEST
    if not path.exists():
        return {"format": FORMAT}
    try:
        m = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"corrupt {path} ({e}): delete it and rerun `autoresearch prepare`") from e
    if m.get("format") != FORMAT:
        raise ValueError(
            f"{path} has format {m.get('format')}, expected {FORMAT}: rerun `autoresearch prepare`"
        )
    return m


def save(data_dir: Path, manifest: dict) -> None:
    path = Path(data_dir) / MANIFEST
    tmp = path.with_name(MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


def fingerprint(data_dir: Path) -> str:
    """The dataset's identity: a sha256 over the tokenizer's and every token shard's content hash (no paths, no
    times), so two machines that prepared the same data agree, and any other data differs."""
    import hashlib

    m = load(data_dir)
    if "stats" not in m:
        raise ValueError(f"`autoresearch prepare` did not finish in {data_dir}: rerun it to resume")
    tok = m["tokenizer"]
    parts = [tok["sha256"], tok["token_bytes_sha256"]]
    parts += [f"{name}:{e['role']}:{e['sha256']}" for name, e in sorted(m["shards"].items())]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()
