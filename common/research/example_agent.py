"""A scripted stand-in for a coding agent, for demos and tests: `autoresearch loop --agent example`.

It reads the harness's prompt on stdin, takes the first idea below that the prompt's "Already tried" list does not
name, applies it to the training script ($AUTORESEARCH_SCRIPT) and prints the description line the harness reads.
It never thinks; it shows the loop's mechanics on any machine, with no API key.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

# (description, constant, new value): one-line hyperparameter edits that both twins accept.
IDEAS = [
    ("matrix lr 0.04 -> 0.06", "MATRIX_LR", "0.06"),
    ("warmdown over 70% of the run instead of 50%", "WARMDOWN_RATIO", "0.7"),
    ("embedding lr 0.6 -> 0.9", "EMBEDDING_LR", "0.9"),
    ("unembedding lr 0.004 -> 0.008", "UNEMBEDDING_LR", "0.008"),
    ("final lr 10% of the initial, not 0", "FINAL_LR_FRAC", "0.1"),
    ("Muon weight decay 0.2 -> 0.1", "WEIGHT_DECAY", "0.1"),
    ("scalar lr 0.5 -> 0.3", "SCALAR_LR", "0.3"),
]


def tried(prompt: str) -> set[str]:
    section = prompt.split("Already tried", 1)[-1] if "Already tried" in prompt else ""
    return {line[2:].strip() for line in section.splitlines() if line.startswith("- ")}


def main() -> int:
    prompt = sys.stdin.read()
    script = Path(os.environ.get("AUTORESEARCH_SCRIPT", "train_torch.py"))
    text = script.read_text()
    done = tried(prompt)
    for description, name, value in IDEAS:
        pattern = re.compile(rf"^({name} = )([^#\n]+?)(\s*#.*)?$", re.M)
        m = pattern.search(text)
        if description in done or not m or m.group(2).strip() == value:
            continue
        script.write_text(text[: m.start(2)] + value + text[m.end(2) :])
        print(f"Set {name} = {value} in {script}.")
        print(f"description: {description}")
        return 0
    print("no untried idea left", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
