"""Where prepared data lives.

`<home>/<dataset>/` with home = $AUTORESEARCH_HOME or ~/.cache/autoresearch. `prepare` writes the path of the data
directory it finished last to `<home>/current`, so `python train_mlx.py` finds it with no flags;
$AUTORESEARCH_DATA_DIR overrides that.
"""

from __future__ import annotations

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


def current_data_dir() -> Path:
    """The data directory training uses: $AUTORESEARCH_DATA_DIR, else the one `prepare` finished last."""
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser()
    pointer = home() / "current"
    if pointer.exists():
        return Path(pointer.read_text().strip())
    raise FileNotFoundError(
        f"no prepared data found (no {pointer} and ${DATA_ENV} unset): "
        "run `autoresearch prepare --dataset demo` (offline) or `autoresearch prepare` first"
    )
