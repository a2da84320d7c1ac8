"""Keep or discard, so that luck is not kept.

A run is deterministic for its seed, so rerunning the same seed measures nothing; the noise is the spread over
seeds, measured on the baseline (max - min of its K seeds). Comparisons are paired: a candidate is compared with the
best on the same seed. A candidate that beats the best by more than the spread on the primary seed is kept; one that
beats it by less gets a confirming run on the next seed and is kept only if it beats the best there too.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Decision:
    status: str  # "keep", "discard" or "confirm" (run the next seed, then call confirm())
    margin: float  # best - candidate on the primary seed (positive = better)
    spread: float
    confirm_margin: float | None = None

    def describe(self) -> str:
        m = f"margin {self.margin:+.6f}"
        if self.status == "confirm":
            return f"{m} <= seed spread {self.spread:.6f}: confirming with another seed"
        if self.confirm_margin is not None:
            verdict = "confirmed" if self.status == "keep" else "not confirmed"
            return f"{m} <= spread {self.spread:.6f}, {verdict} on the next seed ({self.confirm_margin:+.6f})"
        if self.status == "keep":
            return f"{m} > seed spread {self.spread:.6f}"
        return f"{m}: no better than the best"


def seed_spread(values: list[float]) -> float:
    return max(values) - min(values) if len(values) > 1 else 0.0


def decide(candidate: float, best: float, spread: float) -> Decision:
    margin = best - candidate
    if margin <= 0:
        return Decision("discard", margin, spread)
    if margin > spread:
        return Decision("keep", margin, spread)
    return Decision("confirm", margin, spread)


def confirm(first: Decision, candidate: float, best: float) -> Decision:
    """The verdict after the confirming seed: the candidate must beat the best on that seed too."""
    margin = best - candidate
    return Decision("keep" if margin > 0 else "discard", first.margin, first.spread, margin)
