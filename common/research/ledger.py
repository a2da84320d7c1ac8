"""The record of a research branch, in its results directory (default `runs/<tag>/`, ignored by git):

    ledger.jsonl   one line per experiment (keep, discard, crash, violation, skip, agent-failure): the decision,
                   the margin, the parent best and every run behind it; the source of truth
    runs.jsonl     one line per finished run (script sha256, seed, summary, log): a rerun of the same script and seed
                   is read from here, so a resumed loop never pays twice for a run it already made
    results.tsv    upstream's five columns (commit val_bpb memory_gb status description), written anew from the
                   ledger after every append, so the two can never disagree
    logs/          every run's full output

Appends are one write of one line to a file opened for appending, then fsync: a kill leaves at most a torn last
line, which the next open cuts off.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

LEDGER = "ledger.jsonl"
RUNS = "runs.jsonl"
RESULTS_TSV = "results.tsv"
TSV_HEADER = "commit\tval_bpb\tmemory_gb\tstatus\tdescription"
TSV_STATUSES = ("keep", "discard", "crash", "violation")  # upstream's; skips and agent failures stay in the ledger


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def append_jsonl(path: Path, record: dict) -> None:
    data = (json.dumps(record, sort_keys=True, default=str) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_jsonl(path: Path, repair: bool = False) -> list[dict]:
    """Every whole record of a JSON-lines file. A torn last line (a kill mid-append) is skipped, and cut off the
    file when `repair` is set; a bad line elsewhere is corruption and raises."""
    if not path.exists():
        return []
    raw = path.read_bytes()
    records, offset = [], 0
    for line in raw.splitlines(keepends=True):
        try:
            if not line.endswith(b"\n"):
                raise ValueError("no newline")
            records.append(json.loads(line))
        except ValueError as e:
            if offset + len(line) < len(raw):
                raise ValueError(
                    f"{path}: line {len(records) + 1} is not JSON ({e}); it was edited by hand? "
                    "restore it from a backup or move it aside to start a new record"
                ) from None
            if repair:
                with open(path, "r+b") as f:
                    f.truncate(offset)
            break
        offset += len(line)
    return records


def tsv_row(record: dict) -> str:
    commit = (record.get("commit") or "0000000")[:7]
    bpb = record.get("val_bpb") if record["status"] in ("keep", "discard") else None
    memory = record.get("memory_gb") or 0.0
    desc = " ".join(str(record.get("description", "")).split())  # no tabs or newlines inside a column
    return f"{commit}\t{bpb or 0.0:.6f}\t{memory:.1f}\t{record['status']}\t{desc}"


class Ledger:
    """The results directory of one research branch."""

    def __init__(self, directory: Path):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "logs").mkdir(exist_ok=True)
        self.path, self.runs_path = self.dir / LEDGER, self.dir / RUNS
        self.records = read_jsonl(self.path, repair=True)
        self._runs = {r["key"]: r for r in read_jsonl(self.runs_path, repair=True)}
        self.write_tsv()

    # -- experiments ---------------------------------------------------------------------------------------------

    def append(self, record: dict) -> dict:
        record = {"id": self.next_id(), "time": now_iso(), **record}
        append_jsonl(self.path, record)
        self.records.append(record)
        self.write_tsv()
        return record

    def next_id(self) -> int:
        return max((r["id"] for r in self.records), default=0) + 1

    def write_tsv(self) -> None:
        rows = [TSV_HEADER] + [tsv_row(r) for r in self.records if r["status"] in TSV_STATUSES]
        tmp = self.dir / (RESULTS_TSV + ".tmp")
        tmp.write_text("\n".join(rows) + "\n")
        os.replace(tmp, self.dir / RESULTS_TSV)

    def by_commit(self, commit: str) -> dict | None:
        return next((r for r in reversed(self.records) if r.get("commit") == commit), None)

    def by_script(self, sha256: str) -> dict | None:
        """The experiment that already ran this exact script, if any (skips, which ran nothing, excluded)."""
        return next(
            (r for r in self.records if r.get("script_sha256") == sha256 and r.get("runs")),
            None,
        )

    @property
    def baseline(self) -> dict | None:
        """The baseline that ran: a crashed baseline is recorded, but pins nothing and measures no spread."""
        return next((r for r in self.records if r.get("baseline") and r["status"] == "keep"), None)

    @property
    def best(self) -> dict | None:
        return next((r for r in reversed(self.records) if r["status"] == "keep"), None)

    # -- runs ----------------------------------------------------------------------------------------------------

    def cached_run(self, key: str) -> dict | None:
        return self._runs.get(key)

    def add_run(self, run: dict) -> None:
        append_jsonl(self.runs_path, run)
        self._runs[run["key"]] = run

    def log_path(self, experiment_id: int, seed: int, suffix: str = "") -> Path:
        return self.dir / "logs" / f"{experiment_id:04d}-seed{seed}{suffix}.log"
