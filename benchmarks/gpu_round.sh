#!/usr/bin/env bash
# One device call of a measurement round on the GPU machine: unpack the staged wiki shards, optionally run the
# CUDA tests, then train_torch.py runs, each through `autoresearch train` (the harness's runner), with its log
# and a one-line table row in $OUT.
#
#   here, once:  ../shared/tools/wheel-stage.sh fa4, then the corpus as benchmarks/bench_h100.py's header says
#   device:      carry [".stage/env", ".stage/tokens.tar.xz", ".stage/wiki-data/manifest.json",
#                       ".stage/wiki-data/tokenizer.json", ".stage/wiki-data/token_bytes.npy"]
#                bash benchmarks/gpu_round.sh [--tests] NAME:PROFILE:SEED:ENV... ...
#
# A run spec NAME:PROFILE:SEED[:VAR=VALUE...], e.g. `fa4:h100@60s:42` or `flex:h100@60s:42:AUTORESEARCH_FA4=0`;
# NAME=before runs the twin of commit $BEFORE (default 0581900, the last one before the run protocol moved to
# common/) from a copy. Without .stage/env (no FA4 wheels) everything still runs, on cuDNN + FlexAttention.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-.stage/out}
mkdir -p "$OUT"
[ -f .stage/env/activate.sh ] && { source .stage/env/activate.sh || exit 1; }
python3 -m pip install -q --no-deps --no-build-isolation -e . >/dev/null 2>&1 || true
export AUTORESEARCH_HOME=/tmp/arhome AUTORESEARCH_DATA_DIR=$PWD/.stage/wiki-data PYTHONUNBUFFERED=1
if [ ! -d .stage/wiki-data/tokens ]; then
  tar -xJf .stage/tokens.tar.xz -C .stage/wiki-data || exit 1
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__)" | tee -a "$OUT/gpu.txt"
if [ "${1:-}" = --tests ]; then
  shift
  python3 -m pytest -q -rs tests/test_kernels.py tests/test_torch_backend.py -k "cuda or fa4" 2>&1 | tee "$OUT/cuda_tests.txt"
fi
printf '%-8s %-12s %4s %12s %7s %9s %8s %8s %6s %9s\n' run profile seed tokens/s mfu% peak_MiB startup compile eval val_bpb \
  | tee "$OUT/table.txt"
for spec in "$@"; do
  IFS=: read -r name profile seed vars <<<"$spec"
  log="$OUT/${name}_${profile//@/_}_s${seed}.log"
  if [ "$name" = before ]; then
    git show "${BEFORE:-0581900}:train_torch.py" > .stage/before_train_torch.py
    env ${vars//:/ } AUTORESEARCH_PROFILE="$profile" AUTORESEARCH_BACKEND=cuda PYTHONPATH=$PWD \
      python3 .stage/before_train_torch.py > "$log" 2>&1
  else
    env ${vars//:/ } python3 -m common.cli train --backend cuda --profile "$profile" --seed "$seed" --log "$log" \
      > /dev/null 2>&1
  fi
  python3 - "$log" "$name" "$profile" "$seed" <<'PY' | tee -a "$OUT/table.txt"
import sys
from common.summary import parse_summary
log, name, profile, seed = sys.argv[1:]
try:
    s = parse_summary(open(log).read())
except ValueError:
    print(f"{name:<8} {profile:<12} {seed:>4} FAILED: see {log}")
    sys.exit()
print(f"{name:<8} {profile:<12} {seed:>4} {s['tokens_per_second']:>12,.0f} {s['mfu_percent']:>7.2f} {s['peak_vram_mb']:>9.0f} "
      f"{s['startup_seconds']:>8.1f} {s['compile_seconds']:>8.1f} {s['eval_seconds']:>6.1f} {s['val_bpb']:>9.6f}")
PY
done
