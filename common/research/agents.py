"""The agent: a command that reads a prompt on stdin, edits the training script in the current directory, and
exits. Presets for the coding-agent CLIs people run headless; anything else is a shell command.

The agent's reply should end with `description: <one line>`; that line becomes the commit message and the
results.tsv description. Its output goes to a log file, never to the terminal (it can be long).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from common.runner import _new_group, kill_group

# {script} is the file the agent may edit; the prompt arrives on stdin (aider reads it from {prompt_file}).
# Each asks for no permission and can edit only the script where the CLI allows that (flags checked against each
# CLI's docs and, for claude and aider, a local run, in 2026-12).
PRESETS = {
    "claude": 'claude -p --permission-mode dontAsk --tools "Read,Edit,Glob,Grep" '
    '--allowedTools "Read,Edit(./{script}),Glob,Grep"',
    "codex": "codex exec --sandbox workspace-write --ephemeral --color never -",
    "gemini": "GEMINI_CLI_TRUST_WORKSPACE=true gemini --approval-mode auto_edit -o text",
    "aider": "aider --message-file {prompt_file} --file {script} --yes-always --no-auto-commits --no-dirty-commits "
    "--no-gitignore --no-suggest-shell-commands --no-detect-urls --no-auto-lint --no-pretty --no-stream "
    "--no-fancy-input --no-check-update --no-show-release-notes --analytics-disable --map-tokens 0",
}
EXAMPLE = "python -m common.research.example_agent"  # the scripted agent shipped for demos and tests
DESCRIPTION = re.compile(r"^\W*description\W*:\s*(.+?)\s*$", re.I | re.M)


@dataclass
class AgentResult:
    exit_code: int | None
    timed_out: bool
    seconds: float
    description: str
    log: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out


def resolve(agent: str) -> str:
    """A preset's command line, `example` for the shipped scripted agent, or the user's own command as given."""
    if agent == "example":
        return EXAMPLE.replace("python", f'"{sys.executable}"', 1)
    return PRESETS.get(agent, agent)


def run_agent(
    command: str, prompt: str, root: Path, script: str, log_path: Path, timeout: float, env: dict | None = None,
    on_start=None,
) -> AgentResult:
    """Run the agent once, in its own process group, killed with its children after `timeout` seconds."""
    prompt_file = log_path.with_suffix(".prompt.md")
    prompt_file.write_text(prompt)
    cmd = command.replace("{script}", script).replace("{prompt_file}", str(prompt_file))
    full_env = {
        **os.environ,
        **(env or {}),
        "AUTORESEARCH_SCRIPT": script,
        "AUTORESEARCH_PROMPT_FILE": str(prompt_file),
    }
    t0 = time.time()
    with open(log_path, "w") as log, open(prompt_file) as stdin:
        log.write(f"$ {cmd}\n")
        log.flush()
        proc = subprocess.Popen(
            cmd, shell=True, cwd=root, env=full_env, stdin=stdin, stdout=log, stderr=subprocess.STDOUT,
            **_new_group(),
        )  # fmt: skip
        if on_start:
            on_start(proc)
        expired = threading.Event()
        timer = threading.Timer(timeout, lambda: (expired.set(), kill_group(proc)))
        timer.daemon = True
        timer.start()
        try:
            rc = proc.wait()
        except BaseException:
            kill_group(proc)
            raise
        finally:
            timer.cancel()
    output = log_path.read_text(errors="replace")
    found = DESCRIPTION.findall(output)
    return AgentResult(rc, expired.is_set(), time.time() - t0, found[-1] if found else "", str(log_path))


def build_prompt(
    program: str,
    *,
    script: str,
    tag: str,
    profile: str,
    backend: str,
    best: dict,
    baseline: dict,
    diff: str,
    history: list[dict],
    max_diff_lines: int = 200,
    max_history: int = 15,
) -> str:
    """program.md plus what this iteration needs to know: the best so far, how it differs from the baseline, the
    latest results and every idea already tried (so the agent does not repeat one)."""
    diff_lines = diff.splitlines()
    if len(diff_lines) > max_diff_lines:
        diff_lines = diff_lines[:max_diff_lines] + [f"... ({len(diff_lines) - max_diff_lines} more lines)"]
    recent = [r for r in history if r["status"] in ("keep", "discard", "crash", "violation")][-max_history:]

    def row(r: dict) -> str:
        bpb = f"{r['val_bpb']:.6f}" if r.get("val_bpb") else "-"
        why = f" ({r['reason']})" if r.get("reason") and r["status"] in ("crash", "violation") else ""
        return f"- #{r['id']} {r['status']:<9} {bpb}  {r.get('description', '')}{why}"

    tried = sorted({r.get("description", "") for r in history if not r.get("baseline")} - {""})
    parts = [
        program.rstrip(),
        "",
        "---",
        "# This iteration (written by the harness)",
        "",
        f"Branch autoresearch/{tag}, backend {backend}, profile {profile}. The harness runs, scores, keeps or reverts;",
        f"you only edit `{script}`. Any change to another file is undone and recorded as a violation.",
        "",
        f"Current best: commit {best['commit'][:7]}, val_bpb {best['val_bpb']:.6f} "
        f"(baseline {baseline['val_bpb']:.6f} at {baseline['commit'][:7]}; seed spread "
        f"{baseline.get('spread', 0.0):.6f}: a gain smaller than that needs a confirming seed).",
        "",
        "Changes from the baseline to the best:",
        "```diff",
        *(diff_lines or ["(none: the best is the baseline)"]),
        "```",
        "",
        "Latest results (oldest first):",
        *([row(r) for r in recent] or ["(none yet)"]),
        "",
        "Already tried (do not repeat these):",
        *([f"- {d}" for d in tried] or ["(nothing yet)"]),
        "",
        f"Now make ONE change to `{script}` that you expect to lower val_bpb. Do not run training, do not commit,",
        "do not touch other files. End your reply with one line:",
        "description: <what you changed, under 72 characters>",
        "",
    ]
    return "\n".join(parts)
