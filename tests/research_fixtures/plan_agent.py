"""A scripted agent for the loop's tests: each turn takes the next action from the JSON plan in $PLAN_FILE.

Actions: {"set": {"VAL": 1.4}, "desc": "..."} edits constants of the training script; {"touch": "path"} changes
another file too; {"exit": 3} fails; {"sleep": 60} hangs; {"commit": true} also commits, as agents do by habit;
{"noop": true} changes nothing; {"new": "path"} creates an untracked file; {"reset_back": true} resets the branch
one commit back."""

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

plan_file = Path(os.environ["PLAN_FILE"])
plan = json.loads(plan_file.read_text())
sys.stdin.read()  # the prompt: a real agent reads it
if not plan:
    print("plan exhausted", file=sys.stderr)
    sys.exit(9)
action = plan.pop(0)
plan_file.write_text(json.dumps(plan))
script = Path(os.environ["AUTORESEARCH_SCRIPT"])
if "sleep" in action:
    time.sleep(action["sleep"])
for name, value in action.get("set", {}).items():
    text = re.sub(rf"^{name} = .*$", f"{name} = {value!r}", script.read_text(), count=1, flags=re.M)
    script.write_text(text)
if "touch" in action:
    with open(action["touch"], "a") as f:
        f.write("# edited by the agent\n")
if "new" in action:
    Path(action["new"]).parent.mkdir(parents=True, exist_ok=True)
    Path(action["new"]).write_text("new\n")
if action.get("commit"):
    subprocess.run(["git", "commit", "-qam", "agent's own commit"], check=True)
if action.get("reset_back"):  # `git reset --hard HEAD~1`, the classic: the branch moves off the best
    subprocess.run(["git", "reset", "-q", "--hard", "HEAD~1"], check=True)
if "desc" in action:
    print("I changed the script.\ndescription: " + action["desc"])
sys.exit(action.get("exit", 0))
