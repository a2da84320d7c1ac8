"""The git ratchet: a branch `autoresearch/<tag>`, one harness commit per experiment, and resets only to the recorded
best, only over commits the harness made itself (never `HEAD~1`, never a user's commit).

A harness commit carries the trailer `Autoresearch-Experiment: <id>`: that is how the harness knows its own.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import git

TRAILER = "Autoresearch-Experiment"
BRANCH_PREFIX = "autoresearch/"


class GitError(Exception):
    """A repository state the harness will not touch: the message says what to do."""


class Ratchet:
    def __init__(self, root: Path, script: str):
        try:
            self.repo = git.Repo(root, search_parent_directories=True)
        except (git.InvalidGitRepositoryError, git.NoSuchPathError):
            raise GitError(
                f"{root} is not a git repository: the loop keeps and reverts commits, so run it in a git "
                "checkout of autoresearch (git clone ...; or git init && git add -A && git commit -m start)"
            ) from None
        self.root = Path(self.repo.working_tree_dir)
        self.script = script  # the one file the agent may change, relative to root

    # -- branch --------------------------------------------------------------------------------------------------

    @staticmethod
    def branch_name(tag: str) -> str:
        return tag if tag.startswith(BRANCH_PREFIX) else BRANCH_PREFIX + tag

    def current_branch(self) -> str | None:
        return None if self.repo.head.is_detached else self.repo.active_branch.name

    def start(self, tag: str) -> bool:
        """Check out autoresearch/<tag>, creating it from HEAD if it does not exist. Returns True if created."""
        name = self.branch_name(tag)
        if not self.repo.head.is_valid():
            raise GitError("the repository has no commit yet: commit the project first (git add -A && git commit)")
        if self.current_branch() == name:
            return False
        dirty = self.tracked_changes()
        if dirty:
            raise GitError(
                f"uncommitted changes to {', '.join(sorted(dirty)[:5])}: commit or stash them before the loop "
                f"switches to {name}"
            )
        self.clear_stale_lock()
        created = name not in self.repo.heads
        if created:
            self.repo.create_head(name)
        self.repo.heads[name].checkout()
        return created

    # -- state ---------------------------------------------------------------------------------------------------

    def head(self) -> str:
        return self.repo.head.commit.hexsha

    def clear_stale_lock(self) -> None:
        """A kill -9 during a commit leaves .git/index.lock behind, and every later git command fails on it."""
        lock = Path(self.repo.git_dir) / "index.lock"
        if lock.exists():
            lock.unlink()

    def _status(self) -> list[tuple[str, str]]:
        out = self.repo.git.status("--porcelain=v1", "-z", "--untracked-files=all")
        entries, parts = [], out.split("\0")
        i = 0
        while i < len(parts):
            entry = parts[i]
            i += 1
            if not entry:
                continue
            code, path = entry[:2], entry[3:]
            if code[0] in "RC":  # a rename names its source next
                entries.append((code, parts[i]))
                i += 1
            entries.append((code, path))
        return entries

    def tracked_changes(self) -> set[str]:
        return {p for code, p in self._status() if code != "??"}

    def untracked(self) -> set[str]:
        return {p for code, p in self._status() if code == "??"}

    def is_ancestor(self, a: str, b: str) -> bool:
        return self.repo.is_ancestor(a, b)

    def commits_since(self, base: str) -> list[git.Commit]:
        return list(self.repo.iter_commits(f"{base}..HEAD"))

    @staticmethod
    def experiment_of(commit: git.Commit) -> int | None:
        """The experiment id in a harness commit's trailer, else None (not the harness's)."""
        for line in reversed(commit.message.strip().splitlines()):
            key, _, value = line.partition(":")
            if key.strip() == TRAILER and value.strip().isdigit():
                return int(value.strip())
        return None

    def commit(self, sha: str) -> git.Commit:
        return self.repo.commit(sha)

    def script_at(self, sha: str) -> str:
        # The blob's exact bytes: `git show` through GitPython strips the final newline, and the sha256 with it.
        return (self.repo.commit(sha).tree / self.script).data_stream.read().decode()

    def work_tree_script(self) -> str:
        """The script as the work tree holds it, byte for byte (read_text would turn CRLF into LF, and its sha256
        would then never match the blob's)."""
        return (self.root / self.script).read_bytes().decode()

    def diff(self, a: str, b: str) -> str:
        return self.repo.git.diff(a, b, "--", self.script)

    # -- changes -------------------------------------------------------------------------------------------------

    def commit_script(self, message: str, experiment_id: int) -> str:
        self.clear_stale_lock()
        self.repo.git.add("--", self.script)
        body = f"{message}\n\n{TRAILER}: {experiment_id}\n"
        with self.repo.git.custom_environment(**self._identity()):
            self.repo.git.commit("--no-verify", "-q", "-m", body, "--", self.script)
        return self.head()

    def _identity(self) -> dict:
        # Commits need a name and an email; a fresh machine or CI box may have neither configured.
        reader = self.repo.config_reader()
        env = {}
        if not reader.get_value("user", "name", ""):
            env.update(GIT_AUTHOR_NAME="autoresearch", GIT_COMMITTER_NAME="autoresearch")
        if not reader.get_value("user", "email", ""):
            env.update(GIT_AUTHOR_EMAIL="autoresearch@localhost", GIT_COMMITTER_EMAIL="autoresearch@localhost")
        return env

    def unwind_to(self, best: str) -> None:
        """Move HEAD back to `best` keeping the work tree: for commits an agent made on its own during its turn."""
        self.repo.git.reset("-q", "--mixed", best)

    def reset_to(self, best: str, remove: set[str] = frozenset()) -> None:
        """Hard reset to the recorded best and delete the untracked files in `remove` (an agent's new files). Refuses
        if any commit between best and HEAD is not a harness commit: those are somebody's work."""
        self.clear_stale_lock()
        head = self.head()
        if head != best:
            if not self.is_ancestor(best, head):
                raise GitError(
                    f"HEAD {head[:7]} does not descend from the recorded best {best[:7]}: the branch was moved by "
                    "hand; check it out at the best commit (git reset --hard <best>) and rerun"
                )
            foreign = [c for c in self.commits_since(best) if self.experiment_of(c) is None]
            if foreign:
                c = foreign[0]
                raise GitError(
                    f"commit {c.hexsha[:7]} ({c.summary!r}) after the recorded best {best[:7]} was not made by the "
                    "harness: move it to another branch (git branch keep-mine; git reset --hard <best>) and rerun"
                )
        self.repo.git.reset("-q", "--hard", best)
        for path in sorted(remove):
            target = self.root / path
            if target.is_file() or target.is_symlink():
                target.unlink()
        for path in sorted({str(Path(p).parent) for p in remove}, key=len, reverse=True):
            d = self.root / path
            while d != self.root and d.is_dir() and not any(d.iterdir()):
                d.rmdir()
                d = d.parent

    def fixed_files_touched(self, paths: set[str]) -> list[str]:
        return sorted(p for p in paths if os.path.normpath(p) != os.path.normpath(self.script))

    # -- several experiments at once (driver.py) -----------------------------------------------------------------

    def fast_forward(self, commit: str) -> None:
        """Advance the checked-out branch to `commit`, a descendant of HEAD (a kept candidate built on the best)."""
        head = self.head()
        if head == commit:
            return
        if not self.is_ancestor(head, commit):
            raise GitError(
                f"HEAD {head[:7]} is not an ancestor of the kept commit {commit[:7]}: the branch was moved by hand; "
                f"check it out at the recorded best (git reset --hard <best>) and rerun"
            )
        self.clear_stale_lock()
        self.repo.git.reset("-q", "--hard", commit)

    def worktree(self, path: Path, commit: str) -> Ratchet:
        """A detached checkout of `commit` at `path` (created, or reused and cleaned): where one agent works."""
        path = Path(path)
        if not (path / ".git").exists():
            self.repo.git.worktree("prune")
            path.parent.mkdir(parents=True, exist_ok=True)
            self.repo.git.worktree("add", "-q", "--detach", str(path), commit)
        wt = Ratchet(path, self.script)
        wt.clear_stale_lock()
        wt.repo.git.checkout("-q", "--detach", "-f", commit)
        wt.repo.git.clean("-fdq")
        return wt

    def remove_worktree(self, path: Path) -> None:
        if (Path(path) / ".git").exists():
            self.repo.git.worktree("remove", "--force", str(path))
        elif Path(path).is_dir():
            shutil.rmtree(path)  # a worktree git already forgot: only files are left
        self.repo.git.worktree("prune")


def merge_text(base: str, ours: str, theirs: str) -> tuple[str, int]:
    """Three-way merge of one file's text (git merge-file): (merged text, number of conflicting hunks). `theirs`'
    change from `base` is applied on top of `ours`."""
    with tempfile.TemporaryDirectory(prefix="autoresearch-merge-") as d:
        paths = []
        for name, text in (("best", ours), ("parent", base), ("candidate", theirs)):
            path = Path(d) / name
            path.write_bytes(text.encode())
            paths.append(str(path))
        labels = ["-L", "best", "-L", "parent", "-L", "candidate"]
        out = subprocess.run(["git", "merge-file", "-p", *labels, *paths], capture_output=True)
    if not 0 <= out.returncode < 128:
        raise GitError(f"git merge-file failed: {out.stderr.decode(errors='replace').strip()}")
    return out.stdout.decode(), out.returncode
