"""Cross-check benchmarks/RESULTS.md against the logs it cites: every figure quoted beside a log must be in it.

A citation is a backticked path under benchmarks/logs/ (a file, a glob or a folder). It covers its paragraph and
the table right after it. In that table every number outside the first column and the derived columns (DERIVED)
must appear in a cited log at the precision quoted (rounded or truncated), allowing MiB -> GiB or GB and the M / K
suffixes; in the paragraph, every number with a unit of measure (tokens/s, MiB, GB, ms, TFLOP/s) must. Signed
numbers (deltas), ratios (0.55x) and estimates (~7 ms) are derived, so not checked. A table of figures that no
citation covers must say "no log kept" earlier in its section. Prints a row per citing paragraph; exits 1 on any
mismatch, missing log or unsourced table. Reads only repository files.

    python benchmarks/check_results.py                 # benchmarks/RESULTS.md
    python benchmarks/check_results.py --verbose       # every number checked
"""

from __future__ import annotations

import argparse
import bisect
import glob
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CITE = re.compile(r"`(benchmarks/logs/[^`]*)`")
NUMBER = re.compile(r"(?<![\w.])([-+]?)(\d+(?:,\d{3})*(?:\.\d+)?(?:e[-+]?\d+)?)(M|K|x)?(?![\w])", re.I)
LOG_NUMBER = re.compile(r"\d+(?:,\d{3})*(?:\.\d+)?(?:e[-+]?\d+)?", re.I)  # also inside 128x2048 or 1.2ms
UNIT = re.compile(r"\s*(tokens/s|tok/s|MiB|MB|GiB|GB|ms|TFLOP/s|%|s\b|steps\b)")
PROSE_UNITS = ("tokens/s", "tok/s", "MiB", "MB", "GiB", "GB", "ms", "TFLOP/s")  # prose: measurements, not budgets
# Columns computed from the logs (ratios, sums), settings of the run, or words about the row: not checked.
DERIVED = ("vs torch", "overhead", "budget", "run spec", "batch", "caches", "order", "gate", "met", "what it is")
NO_LOG = "no log kept"


@dataclass
class Block:
    line: int  # 1-based line of the paragraph's first citation
    paths: list[str]  # as cited
    logs: list[Path] = field(default_factory=list)  # the files they name
    checked: int = 0
    bad: list[str] = field(default_factory=list)  # one line per problem


def quoted_numbers(text: str, need_unit: bool, unit_default: str = "") -> list[tuple[str, float, float, str]]:
    """(as written, value, quantum, unit) for each number in `text` outside backticks; signed numbers (deltas) and
    ratios (0.55x) are derived, so skipped. need_unit keeps only numbers followed by a unit (prose); a table cell
    takes its column's unit."""
    text = re.sub(r"`[^`]*`", " ", text)
    out = []
    for m in NUMBER.finditer(text):
        sign, digits, suffix = m.group(1), m.group(2), (m.group(3) or "")
        if sign or suffix.lower() == "x" or text[max(0, m.start() - 1) : m.start()] == "~":  # ~: an estimate
            continue
        unit_m = UNIT.match(text, m.end())
        unit = unit_m.group(1) if unit_m else unit_default
        if need_unit and not (unit in PROSE_UNITS or suffix in ("M", "K")):
            continue
        plain = digits.replace(",", "")
        if "e" in plain.lower():
            mant = plain.lower().split("e")[0]
            value = float(plain)
            decimals = len(mant.split(".")[1]) if "." in mant else 0
            quantum = abs(value) * 10.0**-decimals
        else:
            value = float(plain)
            quantum = 10.0 ** -(len(plain.split(".")[1]) if "." in plain else 0)
        if suffix in ("M", "K"):
            scale = 1e6 if suffix == "M" else 1e3
            value, quantum = value * scale, quantum * scale
        out.append((m.group(0), value, quantum, unit))
    return out


def log_values(paths: list[Path]) -> list[float]:
    values = set()
    for p in paths:
        text = p.read_text(errors="replace")
        values.update(float(m.replace(",", "")) for m in LOG_NUMBER.findall(text))
    return sorted(values)


def found(value: float, quantum: float, unit: str, values: list[float]) -> bool:
    """Whether a log value, in the quoted unit, is within one quantum (rounded or truncated) of `value`."""
    scales = [1.0]
    if unit == "GiB":
        scales.append(1 / 1024)  # the logs' peak_vram_mb is MiB
    if unit == "GB":
        scales += [2**20 / 1e9, 1 / 1024]  # MiB as 10^9 bytes, or as GiB (this file's older tables say GB)
    if unit == "s":
        scales.append(1 / 1000)
    if quantum >= 1e3:
        scales += [1e6, 1e3]  # 1.5M or 197K against a log's 1.5 (M) or 197 (K)
    for k in scales:
        lo, hi = (value - quantum) / k, (value + quantum) / k
        i = bisect.bisect_right(values, lo)
        if i < len(values) and values[i] < hi:
            return True
    return False


def table(lines: list[str], start: int) -> tuple[int, list[str]]:
    """(first line, rows) of the table at or after line `start` past blank lines; no rows if the next block is
    not a table."""
    i = start
    while i < len(lines) and not lines[i].strip():
        i += 1
    first = i
    while i < len(lines) and lines[i].lstrip().startswith("|"):
        i += 1
    return first, lines[first:i]


def cells(row: str) -> list[str]:
    return [c.strip() for c in row.strip().strip("|").split("|")]


def check(results: Path, verbose: bool = False) -> tuple[list[Block], list[str]]:
    lines = results.read_text().splitlines()
    blocks: list[Block] = []
    covered: set[int] = set()  # first lines of tables a citation covers
    n = 0
    while n < len(lines):
        # A paragraph: non-blank lines that are neither a heading nor a table row.
        if not lines[n].strip() or lines[n].startswith(("#", "|")):
            n += 1
            continue
        a = n
        while n + 1 < len(lines) and lines[n + 1].strip() and not lines[n + 1].startswith(("#", "|")):
            n += 1
        b, n = n, n + 1
        paths = [p for line in lines[a : b + 1] for p in CITE.findall(line)]
        if not paths:
            continue
        cite_line = next(i for i in range(a, b + 1) if CITE.search(lines[i]))
        block = Block(cite_line + 1, paths)
        for p in paths:
            hits = sorted(glob.glob(str(ROOT / p) + ("/*" if p.endswith("/") else "")))
            files = [Path(h) for h in hits if Path(h).is_file()]
            if not files:
                block.bad.append(f"no such log: {p}")
            block.logs += files
        values = log_values(block.logs)
        quoted = quoted_numbers(" ".join(lines[a : b + 1]), need_unit=True)
        first, rows = table(lines, b + 1)
        if rows:
            covered.add(first)
            header = cells(rows[0])
            # The first column names the row (run, variant): its numbers are settings.
            keep = [i for i, h in enumerate(header) if i and not h.lower().startswith(DERIVED)]
            units = {i: (UNIT.search(header[i]) or [""])[0].strip() for i in keep}
            for row in rows[2:]:
                cs = cells(row)
                for i in keep:
                    if i < len(cs):
                        quoted += quoted_numbers(cs[i], need_unit=False, unit_default=units[i])
        for text, value, quantum, unit in quoted:
            ok = found(value, quantum, unit, values)
            block.checked += 1
            if not ok:
                block.bad.append(f"not in the log: {text}")
            if verbose:
                print(f"  line {block.line}: {text!r} {unit} {'ok' if ok else 'MISSING'}")
        blocks.append(block)
    # Tables of figures no citation covers must say why.
    unsourced = []
    section_start = 0
    i = 0
    while i < len(lines):
        if lines[i].startswith("#"):
            section_start = i
        if lines[i].lstrip().startswith("|"):
            _, rows = table(lines, i)
            figures = any(quoted_numbers(" ".join(cells(r)[1:]), False) for r in rows[2:])
            before = " ".join(lines[section_start:i]).lower()
            if figures and i not in covered and NO_LOG not in before:
                unsourced.append(f"line {i + 1}: a table of figures with no log cited and no '{NO_LOG}'")
            i += len(rows)
            continue
        i += 1
    return blocks, unsourced


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", nargs="?", default=str(ROOT / "benchmarks" / "RESULTS.md"))
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args(argv)
    blocks, unsourced = check(Path(args.results), args.verbose)
    print(f"{'line':>5}  {'status':<8}  {'numbers':>7}  logs")
    for b in blocks:
        status = "mismatch" if b.bad else "ok"
        print(f"{b.line:>5}  {status:<8}  {b.checked:>7}  {', '.join(b.paths)}")
        for bad in b.bad:
            print(f"{'':>17}{bad}")
    for u in unsourced:
        print(f"unsourced: {u}")
    failed = sum(bool(b.bad) for b in blocks) + len(unsourced)
    print(f"{len(blocks)} citations, {sum(b.checked for b in blocks)} numbers checked, {failed} problems")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
