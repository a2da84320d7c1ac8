"""A stand-in training script for the loop's tests: prints what a twin prints, with a val_bpb it reads from its own
constants, so every keep, discard and crash is decided by the test, not by this machine's speed.

VAL is the score on the primary seed; each further seed adds SLOPE. MODE picks a failure to act out."""

import os
import sys
import time

from common.data import PreparedData
from common.profiles import get_profile, run_seed
from common.summary import print_summary

VAL = 1.5
SLOPE = 0.001
MODE = "ok"  # ok | crash | nan | oom | hang | lie | slow

profile, seed = get_profile(), run_seed()
data = PreparedData.open()
rows = data.val_rows(profile.max_seq_len, profile.eval_tokens)
print(f"model fake: profile {profile.name}, seed {seed}", flush=True)
if MODE == "slow" and os.path.exists(os.environ.get("FAKE_SLOW_MARKER", "/nonexistent")):
    time.sleep(120)
if MODE == "hang":
    import subprocess

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    if os.environ.get("FAKE_PID_FILE"):
        with open(os.environ["FAKE_PID_FILE"], "a") as f:
            f.write(f"{child.pid}\n")
    time.sleep(600)
if MODE == "crash":
    raise RuntimeError("boom: a shape mismatch")
if MODE == "oom":
    print("RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB", flush=True)
    sys.exit(1)
if MODE == "nan":
    print("FAIL: loss nan at step 3", flush=True)
    sys.exit(1)
steps = profile.steps or 3
for i in range(steps):
    print(f"step {i:05d} ({100 * i / steps:.1f}%) | loss 3.000000 | lrm 1.00 | dt 1ms | tok/s 1,000 | mfu - | "
          f"epoch 1 | remaining 0s", flush=True)
print("startup 0.1s, compile 0.0s, calibration 0.0s, training 0.1s", flush=True)
print_summary({
    "val_bpb": VAL + SLOPE * (seed - 42),
    "training_seconds": 0.1, "total_seconds": 0.2, "peak_vram_mb": 1024.0 * (1 + seed - 42), "mfu_percent": None,
    "total_tokens_M": 0.1, "num_steps": steps, "num_params_M": 1.0, "depth": 2, "backend": "cpu",
    "device": "fake", "profile": profile.name, "seed": seed, "max_seq_len": profile.max_seq_len,
    "eval_tokens": len(rows) * profile.max_seq_len * (2 if MODE == "lie" else 1), "dataset": data.name,
})
