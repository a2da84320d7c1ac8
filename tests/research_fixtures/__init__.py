"""Fixtures of the loop's tests: a fake training script, a plan-driven agent, and the user's project around them."""

from __future__ import annotations

import subprocess
from pathlib import Path


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout.strip()


def user_project(root: Path, script: str) -> Path:
    """A user's project committed on main: `script` as train_torch.py, program.md, a fixed file, runs/ ignored."""
    (root / "common").mkdir(parents=True)
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "user.name", "user")
    git(root, "config", "user.email", "user@example.com")
    (root / "train_torch.py").write_text(script)
    (root / "program.md").write_text("# program\nLower val_bpb.\n")
    (root / "common" / "fixed.py").write_text("FIXED = 1\n")
    (root / ".gitignore").write_text("runs/\n")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "user: start")
    return root
