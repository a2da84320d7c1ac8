"""The run protocol: one copy for both twins, outside the file the agent edits.

A twin builds its model, optimizer and train step; this module does everything that decides how the run is scored:
the profile, the seed, the data and the fixed val rows, the step budget (calibrated from the step time, or fixed),
the training loop's bookkeeping, the eval and the summary.

    run = Run(T_START, T_IMPORTED, backend)       # profile, seed, data, val rows (from the profile, never the twin)
    ... build the model for run.seq_len and run.vocab_size, seeded with run.seed ...
    run.train(step, reset, device_batch_size=..., total_batch_size=..., num_params=..., flops_per_token=..., depth=...)
    run.finish(loss_fn, eval_batch_size)          # eval + the summary block

`step(x, y, i, progress)` runs one optimizer step on a batch (set the schedule from i and progress) and returns the
loss as the backend holds it; `reset()` restores the initial weights and a fresh optimizer. The backend module
supplies `device_name`, `batch`, `read_later`, `mark`, `seconds_between`, `sync` and `peak_memory_mb`.

Time accounting. A wall-clock budget makes reruns disagree: throughput jitter changes the step count and, through
progress = seconds / budget, the whole lr schedule (upstream's reruns spread by ~0.05 bpb). So the step count is
fixed before training: COMPILE_STEPS compile, CALIBRATION_STEPS are timed, num_steps = round(budget / their mean).
Weights and optimizer are then reset and the loader restarts from its seed, so the run trains exactly num_steps
steps with progress = step / num_steps on the same data as any rerun. In fixed-step mode (a profile such as
"ci@20steps") the calibration is skipped: the same steps on any machine, at any load. A slower change still gets
fewer steps in time mode.
"""

from __future__ import annotations

import gc
import math
import sys
import time

from common.data import PreparedData
from common.evaluate import evaluate_bpb
from common.mfu import mfu_percent
from common.profiles import get_profile, run_seed
from common.summary import print_summary

COMPILE_STEPS = 2  # first steps, thrown away, that compile and warm up (compile_seconds)
CALIBRATION_STEPS = 10  # next steps, thrown away, whose mean time fixes the step count (calibration_seconds)
MAX_LOSS = 100.0  # a loss above this (or NaN) fails the run at once: it diverged


class Run:
    def __init__(self, t_start: float, t_imported: float, backend, backend_name: str):
        self.t_start, self.backend, self.backend_name = t_start, backend, backend_name
        self.marks = [("imports", t_imported)]
        self.profile = get_profile()
        self.seed = run_seed()
        self.device = backend.device_name()
        self.marks.append(("device", time.time()))
        self.data = PreparedData.open()
        self.seq_len = self.profile.max_seq_len
        self.vocab_size = self.data.vocab_size
        self.val_rows = self.data.val_rows(self.seq_len, self.profile.eval_tokens)
        self.marks.append(("data", time.time()))
        self.stats: dict = {}

    # -- training ------------------------------------------------------------------------------------------------

    def train(
        self, step, reset, *, device_batch_size: int, total_batch_size: int, num_params: int, flops_per_token: float,
        depth: int, model_text: str = "",
    ) -> None:  # fmt: skip
        p, T, B = self.profile, self.seq_len, device_batch_size
        if total_batch_size % (B * T):
            raise ValueError(f"TOTAL_BATCH_SIZE {total_batch_size} is not a multiple of DEVICE_BATCH_SIZE * T = {B * T}")
        accum = total_batch_size // (B * T)
        budget = f"{p.steps} steps" if p.steps else f"{p.time_budget:g}s"
        print(f"profile {p.name}: {p.description}; data {self.data.name} ({self.data.dir}); seed {self.seed}")
        print(f"model {model_text}: {num_params / 1e6:.2f}M params, {flops_per_token:.3e} FLOPs/token")
        print(f"batch {total_batch_size:,} tokens = {accum} x {B} x {T}; budget {budget}")
        self.marks.append(("model", time.time()))
        startup = self.marks[-1][1] - self.t_start
        phases = zip(self.marks, [("start", self.t_start)] + self.marks)
        print(f"startup {startup:.1f}s: " + ", ".join(f"{n} {t - t0:.1f}s" for (n, t), (_, t0) in phases), flush=True)

        def next_batch(loader):
            xs, ys, epoch = [], [], 1
            for _ in range(accum):
                x, y, epoch = next(loader)
                xs.append(x)
                ys.append(y)
            return (*self.backend.batch(xs, ys), epoch)

        # Compile and calibrate on throwaway steps, then reset (see the module docstring).
        calibration = 0 if p.steps else CALIBRATION_STEPS
        print(f"compile: {COMPILE_STEPS} warm-up steps" + (f", then {calibration} timed" if calibration else ""),
              flush=True)  # fmt: skip
        loader = self.data.train_batches(B, T, seed=self.seed)
        t0 = time.time()
        for i in range(COMPILE_STEPS + calibration):
            if i == COMPILE_STEPS:
                self.backend.sync()
                compile_seconds, t0 = time.time() - t0, time.time()
            x, y, _ = next_batch(loader)
            loss = step(x, y, i, 0.0)
        loss_f = self.backend.read_later(loss)()
        calibration_seconds = time.time() - t0
        if not calibration:
            compile_seconds, calibration_seconds = calibration_seconds, 0.0
        loader.close()
        if math.isnan(loss_f) or loss_f > MAX_LOSS:
            fail(f"loss {loss_f} during {'calibration' if calibration else 'the compile steps'}")
        if p.steps:
            num_steps = p.steps
            print(f"compile {compile_seconds:.1f}s ({COMPILE_STEPS} steps); fixed-step mode: {num_steps} steps")
        else:
            step_time = calibration_seconds / CALIBRATION_STEPS
            num_steps = max(1, round(p.time_budget / step_time))
            print(
                f"compile {compile_seconds:.1f}s ({COMPILE_STEPS} steps); calibration {step_time * 1e3:.0f} ms/step "
                f"over {CALIBRATION_STEPS} steps -> {num_steps} steps for {p.time_budget:g}s",
                flush=True,
            )
        reset()

        loader = self.data.train_batches(B, T, seed=self.seed)
        x, y, epoch = next_batch(loader)
        gc.collect()
        gc.freeze()  # no collector pauses mid-run (upstream: ~500 ms each)
        gc.disable()
        smooth, pending, next_epoch, dts = 0.0, None, epoch, []
        self.backend.sync()
        t_train = time.time()
        last = self.backend.mark()

        def report(i, progress, epoch, read, start, end, smooth):
            loss_f = read()  # waits for that step only
            dt = self.backend.seconds_between(start, end)
            if math.isnan(loss_f) or loss_f > MAX_LOSS:
                fail(f"loss {loss_f} at step {i}")
            smooth = 0.9 * smooth + 0.1 * loss_f
            dts.append(dt)
            tok_s = total_batch_size / dt
            mfu = mfu_percent(flops_per_token, tok_s, self.device)
            # The mean step time after the first (which can stall on a late compile), not the elapsed time per step.
            mean_dt = sum(dts[1:]) / (len(dts) - 1) if len(dts) > 1 else dt
            remaining = (num_steps - i - 1) * mean_dt
            print(
                f"step {i:05d} ({100 * progress:.1f}%) | loss {smooth / (1 - 0.9 ** (i + 1)):.6f} | "
                f"dt {dt * 1000:.0f}ms | tok/s {tok_s:,.0f} | mfu {'-' if mfu is None else f'{mfu:.1f}%'} | "
                f"epoch {epoch} | remaining {remaining:.0f}s",
                flush=True,
            )
            return smooth

        i = 0
        for i in range(num_steps):
            progress = i / num_steps
            loss = step(x, y, i, progress)
            read, end = self.backend.read_later(loss), self.backend.mark()  # one host read, of the step before
            if i + 1 < num_steps:
                x, y, next_epoch = next_batch(loader)
            if pending is not None:
                smooth = report(*pending, smooth)  # the device has this step queued meanwhile
            pending, epoch, last = (i, progress, epoch, read, last, end), next_epoch, end
            # Never in fixed-step mode: its step count must not depend on the machine's speed.
            if not p.steps and time.time() - t_train > 2 * p.time_budget:
                print(f"warning: stopping at step {i}: twice the {p.time_budget:g}s budget has passed", flush=True)
                break
        report(*pending, smooth)
        self.backend.sync()
        training_seconds = time.time() - t_train
        num_steps = i + 1
        loader.close()
        gc.enable()
        print(
            f"startup {startup:.1f}s, compile {compile_seconds:.1f}s, calibration {calibration_seconds:.1f}s, "
            f"training {training_seconds:.1f}s",
            flush=True,
        )
        self.stats = dict(
            startup_seconds=startup, compile_seconds=compile_seconds, calibration_seconds=calibration_seconds,
            training_seconds=training_seconds, num_steps=num_steps, total_batch_size=total_batch_size,
            num_params=num_params, flops_per_token=flops_per_token, depth=depth,
        )  # fmt: skip

    # -- eval and summary ----------------------------------------------------------------------------------------

    def finish(self, loss_fn, eval_batch_size: int) -> dict:
        """val_bpb on the profile's val rows, then the summary block (the one the harness parses)."""
        s = self.stats
        tokens = s["num_steps"] * s["total_batch_size"]
        tokens_per_second = tokens / s["training_seconds"]
        eval_tokens = self.val_rows.shape[0] * self.seq_len
        # Forward only: about a third of a training step's work per token.
        print(f"eval: {eval_tokens:,} tokens, about {eval_tokens / (3 * tokens_per_second):.0f}s", flush=True)
        t_eval = time.time()
        val_bpb = evaluate_bpb(loss_fn, self.val_rows, eval_batch_size, self.data.token_bytes)
        eval_seconds = time.time() - t_eval
        print(f"eval {eval_tokens:,} tokens in {eval_seconds:.1f}s ({eval_tokens / eval_seconds:,.0f} tok/s)")
        train_tokens = self.data.manifest["stats"]["train_tokens"]
        epochs = tokens / train_tokens  # passes over the train split
        if epochs > 1:
            print(
                f"warning: this run made {epochs:.2f} passes over the {train_tokens:,} train tokens: val_bpb now "
                "rewards memorisation; prepare more data or train fewer steps",
                flush=True,
            )
        summary = {
            "val_bpb": val_bpb,
            "training_seconds": s["training_seconds"],
            "total_seconds": time.time() - self.t_start,
            "peak_vram_mb": self.backend.peak_memory_mb(),
            "mfu_percent": mfu_percent(s["flops_per_token"], tokens_per_second, self.device),
            "total_tokens_M": tokens / 1e6,
            "num_steps": s["num_steps"],
            "num_params_M": s["num_params"] / 1e6,
            "depth": s["depth"],
            "backend": self.backend_name,
            "device": self.device,
            "profile": self.profile.name,
            "startup_seconds": round(s["startup_seconds"], 2),
            "compile_seconds": round(s["compile_seconds"], 2),
            "calibration_seconds": round(s["calibration_seconds"], 2),
            "eval_seconds": round(eval_seconds, 2),
            "tokens_per_second": round(tokens_per_second, 1),
            "dataset": self.data.name,
            "seed": self.seed,
            "max_seq_len": self.seq_len,
            "eval_tokens": eval_tokens,
            "epochs": round(epochs, 4),
            "steps_mode": "fixed" if self.profile.steps else "time",
        }
        print_summary(summary)
        return summary


def fail(message: str) -> None:
    """A diverged run: one FAIL line (the harness records it as a crash) and exit 1, without a summary."""
    print(f"FAIL: {message}", flush=True)
    sys.exit(1)
