"""`autoresearch results`: what a research branch found, from its ledger.

Counts by status, the baseline and its seed spread, the best with its gain in units of that spread, the timeline
of kept changes, the best experiments, the search's own throughput (with several workers, per worker, and the time
each ran nothing), and upstream's progress plot (every
experiment's val_bpb and the running best), which needs matplotlib (`pip install -e ".[plot]"`).
"""

from __future__ import annotations

import calendar
import time
from pathlib import Path

STATUSES = ("keep", "discard", "crash", "violation", "skip", "agent-failure")


def _epoch(iso: str) -> float:
    return calendar.timegm(time.strptime(iso, "%Y-%m-%dT%H:%M:%SZ"))


def summarize(records: list[dict], top: int = 10, kept_only: bool = False) -> dict:
    counts = {s: sum(r["status"] == s for r in records) for s in STATUSES}
    base = next((r for r in records if r.get("baseline") and r["status"] == "keep"), None)
    kept = [r for r in records if r["status"] == "keep"]
    best = kept[-1] if kept else None
    out: dict = {"experiments": len(records), "counts": counts}
    if records:
        first = records[0]
        out.update(tag=first.get("tag"), backend=first.get("backend"), profile=first.get("profile"))
    if base and base["status"] == "keep":
        spread = base.get("spread", 0.0)
        out["baseline"] = {"commit": base["commit"], "val_bpb": base["val_bpb"], "seeds": base.get("seeds"),
                           "spread": spread}  # fmt: skip
        delta = best["val_bpb"] - base["val_bpb"]
        out["best"] = {
            "id": best["id"], "commit": best["commit"], "val_bpb": best["val_bpb"], "delta": delta,
            "spreads": (-delta / spread) if spread > 0 else None, "description": best.get("description"),
        }  # fmt: skip
    timeline, previous = [], None
    for r in kept:
        timeline.append({"id": r["id"], "commit": r["commit"], "val_bpb": r["val_bpb"],
                         "delta": None if previous is None else r["val_bpb"] - previous,
                         "margin": r.get("margin"), "description": r.get("description", "")})  # fmt: skip
        previous = r["val_bpb"]
    out["kept"] = timeline
    pool = [r for r in records if r["status"] in (("keep",) if kept_only else ("keep", "discard")) and r.get("val_bpb")]
    out["top"] = [
        {"id": r["id"], "status": r["status"], "commit": r.get("commit"), "val_bpb": r["val_bpb"],
         "description": r.get("description", "")}
        for r in sorted(pool, key=lambda r: r["val_bpb"])[:top]
    ]  # fmt: skip
    ran = [r for r in records if r.get("runs")]
    if len(records) >= 2:
        # From the first experiment's start (the baseline's runs included) to the last one's record.
        hours = (_epoch(records[-1]["time"]) - _epoch(records[0].get("started", records[0]["time"]))) / 3600
        run_seconds = sum(run.get("wall_seconds") or 0 for r in ran for run in r["runs"] if not run.get("cached"))
        out["search"] = {
            "hours": round(hours, 3),
            "experiments_per_hour": round(len(records) / hours, 2) if hours > 0 else None,
            "run_seconds": round(run_seconds, 1),
            "busy_fraction": round(run_seconds / (hours * 3600), 3) if hours > 0 else None,
        }
        workers = _workers(records, ran, hours)
        if workers:  # a --workers or --ray loop: its capacity is one run per worker at a time
            out["search"]["busy_fraction"] = round(run_seconds / (hours * 3600 * len(workers)), 3) if hours > 0 else None
            out["search"]["idle_seconds"] = round(sum(w["idle_seconds"] for w in workers), 1)
            out["search"]["workers"] = workers
    return out


def _workers(records: list[dict], ran: list[dict], hours: float) -> list[dict]:
    """Each worker's share of the search: experiments it judged, per hour, and the time it ran nothing (its agent
    thinking, or waiting for the driver), from the ledger's `worker` fields."""
    names = sorted({r["worker"] for r in records if r.get("worker")}
                   | {run["worker"] for r in ran for run in r["runs"] if run.get("worker")})  # fmt: skip
    span = hours * 3600
    out = []
    for name in names:
        n = sum(r.get("worker") == name for r in records)
        busy = sum(run.get("wall_seconds") or 0 for r in ran for run in r["runs"]
                   if run.get("worker") == name and not run.get("cached"))  # fmt: skip
        out.append({
            "worker": name, "experiments": n,
            "experiments_per_hour": round(n / hours, 2) if hours > 0 else None,
            "run_seconds": round(busy, 1), "idle_seconds": round(max(0.0, span - busy), 1),
            "idle_fraction": round(max(0.0, 1 - busy / span), 3) if span > 0 else None,
        })  # fmt: skip
    return out


def format_text(rep: dict) -> str:
    c = rep["counts"]
    lines = [
        f"autoresearch/{rep.get('tag')}: backend {rep.get('backend')}, profile {rep.get('profile')}: "
        f"{rep['experiments']} experiments: {c['keep']} kept, {c['discard']} discarded, {c['crash']} crashed, "
        f"{c['violation']} violations ({c['skip']} skipped as repeats, {c['agent-failure']} agent failures)"
    ]
    if "baseline" in rep:
        b, best = rep["baseline"], rep["best"]
        seeds = ", ".join(map(str, b.get("seeds") or []))
        lines.append(f"baseline {b['val_bpb']:.6f} at {b['commit'][:7]} (seeds {seeds}: spread {b['spread']:.6f})")
        times = f", {best['spreads']:.1f}x the seed spread" if best["spreads"] is not None else ""
        lines.append(f"best     {best['val_bpb']:.6f} at {best['commit'][:7]} (#{best['id']}): {best['delta']:+.6f}{times}")
    if "search" in rep and rep["search"]["experiments_per_hour"]:
        s = rep["search"]
        lines.append(
            f"search   {s['experiments_per_hour']:.1f} experiments/hour over {s['hours']:.2f} h; training runs busy "
            f"{100 * (s['busy_fraction'] or 0):.0f}% of it"
        )
        for w in s.get("workers", []):
            lines.append(
                f"         {w['worker']}: {w['experiments']} experiments ({w['experiments_per_hour'] or 0:.1f}/hour), "
                f"idle {100 * (w['idle_fraction'] or 0):.0f}% ({w['idle_seconds']:.0f} s without a run)"
            )
    if rep["kept"]:
        lines += ["", "kept changes:"]
        for k in rep["kept"]:
            delta = "baseline " if k["delta"] is None else f"{k['delta']:+.6f}"
            lines.append(f"  #{k['id']:<4} {k['commit'][:7]}  {k['val_bpb']:.6f}  {delta}  {k['description']}")
    if rep["top"]:
        lines += ["", "best experiments:"]
        for t in rep["top"]:
            lines.append(f"  #{t['id']:<4} {t['status']:<8} {t['val_bpb']:.6f}  {t['description']}")
    return "\n".join(lines)


def plot(records: list[dict], path: Path) -> None:
    """Every judged experiment's val_bpb (kept ones marked) and the running best, as upstream's progress.png."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed: this writes a file
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    judged = [r for r in records if r["status"] in ("keep", "discard") and r.get("val_bpb")]
    fig, ax = plt.subplots(figsize=(10, 5))
    disc = [r for r in judged if r["status"] == "discard"]
    kept = [r for r in judged if r["status"] == "keep"]
    ax.scatter([r["id"] for r in disc], [r["val_bpb"] for r in disc], c="#bbbbbb", s=18, label="discarded")
    ax.scatter([r["id"] for r in kept], [r["val_bpb"] for r in kept], c="#2a9d4b", s=30, label="kept", zorder=3)
    if kept:
        xs = [r["id"] for r in kept] + [records[-1]["id"]]
        ys = [r["val_bpb"] for r in kept] + [kept[-1]["val_bpb"]]
        ax.step(xs, ys, where="post", c="#2a9d4b", lw=1.5, label="best so far")
    for r in kept[1:]:
        ax.annotate(r.get("description", "")[:40], (r["id"], r["val_bpb"]), fontsize=7, xytext=(4, 4),
                    textcoords="offset points")  # fmt: skip
    first = records[0] if records else {}
    ax.set_title(f"autoresearch/{first.get('tag')}: {first.get('profile')} on {first.get('backend')}")
    ax.set_xlabel("experiment")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_ylabel("val_bpb (lower is better)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
