"""Where prepared data lives.

`<home>/<dataset>/` with home = $AUTORESEARCH_HOME or ~/.cache/autoresearch. `prepare` writes the path of the data
directory it finished last to `<home>/current`, so `python train_mlx.py` finds it with no flags;
$AUTORESEARCH_DATA_DIR overrides that.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

HOME_ENV = "AUTORESEARCH_HOME"
DATA_ENV = "AUTORESEARCH_DATA_DIR"


def home() -> Path:
    env = os.environ.get(HOME_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "autoresearch"


def dataset_dir(name: str) -> Path:
    return home() / name


def set_current(data_dir: Path) -> None:
    home().mkdir(parents=True, exist_ok=True)
    tmp = home() / "current.tmp"
    tmp.write_text(str(Path(data_dir).resolve()) + "\n")
    os.replace(tmp, home() / "current")


PREPARE_HINT = "run `autoresearch prepare --dataset demo` (offline, seconds) or `autoresearch prepare`"


def current_data_dir() -> Path:
    """The data directory training uses: $AUTORESEARCH_DATA_DIR, else the one `prepare` finished last."""
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser()
    pointer = home() / "current"
    if pointer.exists():
        return Path(pointer.read_text().strip())
    raise FileNotFoundError(f"no prepared data yet: {PREPARE_HINT} first")


def prepared_datasets() -> list[Path]:
    """The finished data directories under home(), for error messages that suggest one."""
    return [m.parent for m in sorted(home().glob("*/manifest.json")) if _finished(m)]


def _finished(manifest: Path) -> bool:
    try:
        return "stats" in json.loads(manifest.read_text())
    except (OSError, ValueError):
        return False


def check_prepared(data_dir: Path | None = None, flag: str = "--data-dir") -> Path:
    """The data directory training would use (`data_dir`, else current_data_dir()), checked to be a finished
    `prepare` output. Raises FileNotFoundError whose message names the setting at fault and the fixing command."""
    from common.manifest import MANIFEST

    env = os.environ.get(DATA_ENV)
    d = Path(data_dir).expanduser() if data_dir else current_data_dir()
    if data_dir:
        where = f"{flag} {d}"
    elif env:
        where = f"${DATA_ENV}={env}"
    else:
        where = f"the last prepared data directory {d} (from {home() / 'current'})"
    known = [str(p) for p in prepared_datasets() if p.resolve() != d.resolve()]
    other = f"; prepared here: {', '.join(known)}" if known else ""
    fix = f"{'unset it, or ' if where.startswith('$') else ''}{PREPARE_HINT}{other}"
    if not d.exists():
        raise FileNotFoundError(f"{where} does not exist: {fix}")
    if not d.is_dir():
        raise FileNotFoundError(f"{where} is a file, not a data directory: {fix}")
    manifest = d / MANIFEST
    if not manifest.exists():
        raise FileNotFoundError(f"{where} is not a prepared data directory (no {MANIFEST}): {fix}")
    if not _finished(manifest):
        raise FileNotFoundError(
            f"`autoresearch prepare` did not finish in {d}: rerun it with the same --dataset to resume"
        )
    return d
