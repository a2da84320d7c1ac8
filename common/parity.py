"""`autoresearch parity`: do train_mlx.py and train_torch.py compute the same thing?

    autoresearch parity                  # the current scripts, on the current prepared data, torch on the CPU
    autoresearch parity --json           # the same report as JSON
    autoresearch parity --torch-device cuda

Both twins are loaded from the research checkout, built at a small shape from the same weights (made once by the
torch twin, moved as numpy arrays under the canonical parameter names: the frameworks' RNGs differ) and compared
step by step, from the input rows to 100 training steps. Float32 comparisons run torch at "highest" matmul
precision (no TF32). When a check fails, the report names the first layer, parameter or step where the two
diverge. This is the check to run after porting a change from one script to the other.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

# Gates (float32 unless named): achievable, measured on this exact model (see benchmarks/RESULTS.md).
LOGITS_REL = 1e-5  # max |logit diff| / max |logit|
LOSS_ABS = 1e-5  # per-token loss and val_bpb
GRAD_REL = 1e-4  # per parameter: ||g_torch - g_mlx|| / ||g_torch||
STEP_REL = 1e-4  # per parameter, after one optimizer step: ||w_torch - w_mlx|| / ||w_torch||
TRAIN_ABS = 1e-4  # loss at every one of the training steps
BF16_LOGITS_ABS = 5e-2
BF16_LOSS_ABS = 1e-2  # loss after the training steps

# The parity model: small, but with both window kinds ("SSSL": S, S, S, L), value embeddings on alternating
# layers and two heads.
SHAPE = dict(n_layer=4, n_embd=64, n_head=2, window_pattern="SSSL")
SEQ_LEN = 32
BATCH = 4
TRAIN_STEPS = 100
VAL_ROWS = 16
# Two departures from a training run, both so that the comparison tests the code and not chaos:
# - The weights upstream initialises to zero (attn.c_proj, mlp.c_proj, ve_gate) get small random values. With them
#   at zero every block's output is zero, the residual stream is a multiple of x0, the final RMS norm cancels it,
#   and the gradient of resid_lambdas and x0_lambdas is exactly zero in exact arithmetic: each framework returns
#   its own rounding noise (~1e-11), which AdamW normalises into full-size steps of random sign.
# - The learning-rate schedule is scaled by PARITY_LR_SCALE: at full rate this 4-layer, 64-wide model trains in an
#   unstable regime where float32 differences grow exponentially: AdamW (eps 1e-10) and NorMuon normalise near-zero
#   gradients (rare tokens, value-embedding gates) into full-size steps. Measured on two corpora, the largest loss
#   difference over 100 steps was 2-3e-6 at 0.05, 4e-6 to 1e-4 at 0.1-0.3 and up to 1e-2 at 1.0 (RESULTS.md).
ZERO_INIT_STD = 0.02
PARITY_LR_SCALE = 0.05


@dataclass
class Check:
    name: str
    value: float
    gate: float
    ok: bool
    detail: str = ""


@dataclass
class Report:
    checks: list[Check] = field(default_factory=list)
    info: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def add(self, name: str, value: float, gate: float, detail: str = "") -> Check:
        c = Check(name, float(value), gate, bool(np.isfinite(value) and value <= gate), detail)
        self.checks.append(c)
        return c

    def to_dict(self) -> dict:
        return {"ok": self.ok, "checks": [asdict(c) for c in self.checks], "info": self.info}

    def table(self) -> str:
        w = max(len(c.name) for c in self.checks)
        lines = [f"{'check':<{w}}  {'max diff':>10}  {'gate':>8}  result", "-" * (w + 34)]
        for c in self.checks:
            lines.append(f"{c.name:<{w}}  {c.value:>10.2e}  {c.gate:>8.0e}  {'ok' if c.ok else 'FAIL'}")
            if c.detail and not c.ok:
                lines.append(f"{'':<{w}}    -> {c.detail}")
        if "stopped" in self.info:
            lines.append(f"stopped early: {self.info['stopped']}")
        lines.append(f"parity: {'PASS' if self.ok else 'FAIL'}")
        return "\n".join(lines)


def load_script(path: Path, name: str):
    """Import a training script as a module (its `main()` does not run)."""
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise FileNotFoundError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _rel(a: np.ndarray, b: np.ndarray, floor: float = 1e-30) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(a), floor))


def _sha(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


# ---------------------------------------------------------------------------------------------------------------
# One adapter per framework: the same verbs over the twins' own model, optimizer and train step.


class TorchTwin:
    def __init__(self, mod, device: str, dtype: str):
        import torch

        self.torch, self.mod, self.tb = torch, mod, mod.tb
        self.device = torch.device(device)
        self.dtype = dtype
        torch.set_float32_matmul_precision("highest")
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        self.tdtype = torch.float32 if dtype == "float32" else torch.bfloat16
        # The twin's autocast follows the device; here it follows the row being checked.
        self.tb.autocast = (
            contextlib.nullcontext
            if dtype == "float32"
            else (lambda: torch.autocast(self.device.type, dtype=torch.bfloat16))
        )

    def build(self, cfg, weights: dict | None = None, windows: list[int] | None = None):
        torch = self.torch
        torch.manual_seed(0)
        with torch.device(self.device):
            model = self.mod.GPT(cfg, compute_dtype=self.tdtype, window_sizes=windows)
        model.init_weights()
        if weights is not None:
            self.tb.import_weights(model, weights)
        self.model = model
        return model

    def export(self) -> dict:
        return self.tb.export_weights(self.model)


    def _t(self, a):
        return self.torch.from_numpy(np.ascontiguousarray(a)).to(self.device).long()

    def echo(self, a: np.ndarray) -> np.ndarray:
        return self._t(a).cpu().numpy().astype(a.dtype)

    def logits(self, idx):
        with self.torch.no_grad(), self.tb.autocast():
            return self.model(self._t(idx)).float().cpu().numpy()

    def losses(self, x, y):
        with self.torch.no_grad(), self.tb.autocast():
            return self.model(self._t(x), self._t(y), reduction="none").float().cpu().numpy()

    def grads(self, x, y) -> dict:
        self.model.zero_grad(set_to_none=True)
        with self.tb.autocast():
            loss = self.model(self._t(x), self._t(y))
        loss.backward()
        return {n: p.grad.float().cpu().numpy() for n, p in self.model.named_parameters()}

    def optimizer(self, hp):
        m = self.mod
        self.opt = m.setup_optimizer(self.model, **hp)
        self.opt.polar_dtype = self.torch.float32 if self.dtype == "float32" else self.torch.bfloat16
        return self.opt

    def apply(self, grads: dict, schedule) -> dict:
        for n, p in self.model.named_parameters():
            p.grad = self.torch.from_numpy(grads[n]).to(self.device)
        self.opt.set_schedule(*schedule)
        self.opt.step()
        self.opt.zero_grad()
        return self.export()

    def train(self, batches, schedules) -> list[float]:
        step = self.mod.make_train_step(self.model, self.opt, compiled=False)
        out = []
        for (x, y), sched in zip(batches, schedules):
            self.opt.set_schedule(*sched)
            out.append(float(step([self._t(x)], [self._t(y)])))
        return out


class MlxTwin:
    def __init__(self, mod, dtype: str):
        import mlx.core as mx

        self.mx, self.mod, self.mb = mx, mod, mod.mb
        self.dtype = dtype
        self.mdtype = mx.float32 if dtype == "float32" else mx.bfloat16

    def build(self, cfg, weights: dict | None = None, windows: list[int] | None = None):
        self.mx.random.seed(0)
        model = self.mod.GPT(cfg, compute_dtype=self.mdtype, window_sizes=windows)
        model.init_weights()
        if weights is not None:
            self.mb.import_weights(model, weights)
        self.model = model
        return model

    def export(self) -> dict:
        return self.mb.export_weights(self.model)


    def _a(self, a):
        return self.mx.array(np.ascontiguousarray(a).astype(np.int32))

    def echo(self, a: np.ndarray) -> np.ndarray:
        return np.array(self._a(a)).astype(a.dtype)

    def logits(self, idx):
        return np.array(self.model(self._a(idx)).astype(self.mx.float32))

    def losses(self, x, y):
        return np.array(self.model(self._a(x), self._a(y), reduction="none").astype(self.mx.float32))

    def grads(self, x, y) -> dict:
        import mlx.nn as nn
        from mlx.utils import tree_flatten

        _, g = nn.value_and_grad(self.model, lambda a, b: self.model(a, b))(self._a(x), self._a(y))
        return {n: np.array(v.astype(self.mx.float32)) for n, v in tree_flatten(g)}

    def optimizer(self, hp):
        self.opt = self.mod.setup_optimizer(self.model, **hp)
        return self.opt

    def apply(self, grads: dict, schedule) -> dict:
        self.opt.set_schedule(*schedule)
        self.opt.update(self.model, {n: self.mx.array(g) for n, g in grads.items()})
        self.mx.eval(self.model.parameters())
        return self.export()

    def train(self, batches, schedules) -> list[float]:
        step = self.mod.make_train_step(self.model, self.opt, compiled=True)
        out = []
        for (x, y), sched in zip(batches, schedules):
            self.opt.set_schedule(*sched)
            loss = step(self._a(x)[None], self._a(y)[None])
            self.mx.eval(loss, self.model.parameters(), self.opt.state)
            out.append(float(loss))
        return out


# ---------------------------------------------------------------------------------------------------------------


HYPERPARAMETERS = ("EMBEDDING_LR", "UNEMBEDDING_LR", "MATRIX_LR", "SCALAR_LR", "WEIGHT_DECAY", "ADAM_BETAS")
TWIN_CONSTANTS = (*HYPERPARAMETERS, "ASPECT_RATIO", "HEAD_DIM", "WINDOW_PATTERN", "NORM_EPS", "SOFTCAP",
                  "WARMUP_RATIO", "WARMDOWN_RATIO", "FINAL_LR_FRAC", "TOTAL_BATCH_SIZE", "DEPTH")  # fmt: skip


def _schedules(mod, n: int) -> list[tuple[float, float, float]]:
    return [
        (
            PARITY_LR_SCALE * mod.get_lr_multiplier(i / n),
            mod.get_muon_momentum(i),
            mod.get_weight_decay(i / n),
        )
        for i in range(n)
    ]


def _first_layer_divergence(tw_mod, mx_mod, torch_device, cfg_full, weights, idx) -> str:
    """Build both twins truncated to 1..n_layer layers from the same weights, each layer keeping its attention window
    from the full model (truncation alone would make the last kept layer full-context); name the first layer whose
    addition makes them disagree."""
    from dataclasses import replace

    # each twin's own windows: a port's bug in _compute_window_sizes must show up, not be overridden
    windows_t = tw_mod.GPT._compute_window_sizes(cfg_full)
    windows_m = mx_mod.GPT._compute_window_sizes(cfg_full)
    for k in range(1, cfg_full.n_layer + 1):
        cfg = replace(cfg_full, n_layer=k)
        tt = TorchTwin(tw_mod, torch_device, "float32")
        tt.build(cfg)
        sub = tt.export()
        for name in sub:  # every truncated parameter that exists in the full model takes its weights
            if name in weights and weights[name].shape == sub[name].shape:
                sub[name] = weights[name]
        tt.build(cfg, sub, windows_t[:k])
        mt = MlxTwin(mx_mod, "float32")
        mt.build(cfg, sub, windows_m[:k])
        a, b = tt.logits(idx), mt.logits(idx)
        if np.abs(a - b).max() > LOGITS_REL * max(np.abs(a).max(), 1e-30):
            return (
                f"first divergence in transformer.h.{k - 1} (window {windows_t[k - 1]}): the first {k} layer(s) "
                "already disagree"
            )
    return "every truncated model agrees: the difference is in what follows the blocks (final norm, lm_head, softcap)"


def run_parity(root: Path | None = None, data_dir: Path | None = None, torch_device: str = "cpu",
               mlx_device: str = "cpu", steps: int = TRAIN_STEPS, bf16: bool = True) -> Report:  # fmt: skip
    import mlx.core as mx

    from common.runner import script_for

    # The scripts read a profile at import; parity sets its own shape.
    os.environ.setdefault("AUTORESEARCH_PROFILE", "ci")
    os.environ["AUTORESEARCH_BACKEND"] = torch_device
    tw_mod = load_script(script_for("cpu", root), "_parity_train_torch")
    mx_mod = load_script(script_for("mlx", root), "_parity_train_mlx")
    # MLX on the CPU by default: on a GPU machine the reference pair is torch CUDA (float32, no TF32) vs MLX CPU.
    mx.set_default_device(mx.cpu if mlx_device == "cpu" else mx.gpu)
    autocast = tw_mod.tb.autocast
    try:
        return _run(tw_mod, mx_mod, data_dir, torch_device, steps, bf16)
    finally:
        tw_mod.tb.autocast = autocast  # TorchTwin points it at the row being checked


def _run(tw_mod, mx_mod, data_dir, torch_device, steps, bf16) -> Report:
    from common.data import PreparedData
    from common.evaluate import evaluate_bpb

    report = Report()
    data = PreparedData.open(data_dir)

    # -- the data both see ---------------------------------------------------------------------------------------
    val = data.val_rows(SEQ_LEN, SEQ_LEN * VAL_ROWS)
    loader = data.train_batches(BATCH, SEQ_LEN, seed=0, prefetch=0)
    batches = [(np.array(x), np.array(y)) for (x, y, _), _ in zip(loader, range(steps))]
    report.info["data"] = {
        "dir": str(data.dir),
        "tokenizer_sha256": data.tokenizer_sha256,
        "shards": {Path(e["path"]).name: e["sha256"] for e in data.manifest["shards"].values()},
        "val_rows_sha256": _sha(val),
    }
    tt = TorchTwin(tw_mod, torch_device, "float32")
    mt = MlxTwin(mx_mod, "float32")
    same = all(_sha(tt.echo(a)) == _sha(mt.echo(a)) == _sha(a) for a in [val, *(x for x, _ in batches[:4])])
    report.add("tokenizer, shards, val rows: byte-identical", 0.0 if same else 1.0, 0.0,
               "the two frameworks received different input bytes")  # fmt: skip

    differing = [k for k in TWIN_CONSTANTS if getattr(tw_mod, k, None) != getattr(mx_mod, k, None)]
    report.add("hyperparameters and constants equal", float(len(differing)), 0.0,
               "differ: " + ", ".join(f"{k} (torch {getattr(tw_mod, k, None)!r}, mlx {getattr(mx_mod, k, None)!r})" for k in differing))  # fmt: skip

    # -- one model, the same weights in both -----------------------------------------------------------------------
    head_dim = SHAPE["n_embd"] // SHAPE["n_head"]
    kw = dict(sequence_len=SEQ_LEN, vocab_size=data.vocab_size, n_kv_head=SHAPE["n_head"], **SHAPE)
    cfg_t, cfg_m = tw_mod.GPTConfig(**kw), mx_mod.GPTConfig(**kw)
    tt.build(cfg_t)
    rng = np.random.default_rng(0)
    weights = {
        n: w if w.any() else (rng.standard_normal(w.shape) * ZERO_INIT_STD).astype(np.float32)
        for n, w in tt.export().items()
    }
    tt.build(cfg_t, weights)
    report.info["model"] = {**kw, "head_dim": head_dim, "params": int(sum(w.size for w in weights.values()))}
    names = list(weights)  # canonical order
    mt.build(cfg_m)
    shapes = {n: w.shape for n, w in mt.export().items()}
    odd = sorted(set(shapes) ^ set(names)) + [
        n for n in names if n in shapes and shapes[n] != weights[n].shape
    ]
    c = report.add("canonical parameter names equal", float(len(odd)), 0.0,
                   f"only in one twin, or shaped differently: {odd}")  # fmt: skip
    if not c.ok:  # the same weights cannot go into both models: nothing further can be compared
        report.info["stopped"] = "parameter names or shapes differ; fix them first (docs/twins.md lists them)"
        return report
    mt.build(cfg_m, weights)

    x0, y0 = batches[0]
    lt, lm = tt.logits(x0), mt.logits(x0)
    c = report.add("forward logits (max diff / max |logit|)", np.abs(lt - lm).max() / max(np.abs(lt).max(), 1e-30),
                   LOGITS_REL)  # fmt: skip
    if not c.ok:
        c.detail = _first_layer_divergence(tw_mod, mx_mod, torch_device, cfg_t, weights, x0)

    pt, pm = tt.losses(val[:, :-1], val[:, 1:]), mt.losses(val[:, :-1], val[:, 1:])
    report.add("per-token loss on the val rows", np.abs(pt - pm).max(), LOSS_ABS)
    bpb_t = evaluate_bpb(lambda x, y: tt.losses(x, y), val, 4, data.token_bytes)
    bpb_m = evaluate_bpb(lambda x, y: mt.losses(x, y), val, 4, data.token_bytes)
    report.info["val_bpb"] = {"torch": bpb_t, "mlx": bpb_m}
    report.add("val_bpb on the val rows", abs(bpb_t - bpb_m), LOSS_ABS)

    gt, gm = tt.grads(x0, y0), mt.grads(x0, y0)
    # Relative to each gradient's norm, floored at 1e-3 of the largest: a near-zero gradient is compared at the
    # scale of the others, not at its own rounding noise.
    floor = 1e-3 * max(float(np.linalg.norm(g)) for g in gt.values())
    rels = {n: _rel(gt[n], gm[n], floor) for n in names}
    worst = max(rels, key=rels.get)
    first = next((n for n in names if rels[n] > GRAD_REL), None)
    report.add(
        "gradients (per parameter, relative)", rels[worst], GRAD_REL, f"first diverging parameter: {first}"
    )

    # -- the optimizer, fed identical gradients ------------------------------------------------------------------
    hp = dict(unembedding_lr=tw_mod.UNEMBEDDING_LR, embedding_lr=tw_mod.EMBEDDING_LR, matrix_lr=tw_mod.MATRIX_LR,
              weight_decay=tw_mod.WEIGHT_DECAY, adam_betas=tw_mod.ADAM_BETAS, scalar_lr=tw_mod.SCALAR_LR)  # fmt: skip
    tt.optimizer(hp)
    mt.optimizer(hp)
    groups = {n: g["kind"] for g in tt.opt.param_groups for n in g["names"]}
    schedule = (1.0, 0.95, tw_mod.WEIGHT_DECAY)
    wt, wm = tt.apply(gt, schedule), mt.apply(gt, schedule)
    for kind, label in (
        ("adamw", "one AdamW step (updated weights)"),
        ("muon", "one Muon step (updated weights)"),
    ):
        rels = {n: _rel(wt[n], wm[n]) for n in names if groups.get(n) == kind}
        upd = {n: _rel(wt[n] - weights[n], wm[n] - weights[n]) for n in rels}
        first = next((n for n in names if rels.get(n, 0) > STEP_REL), None)
        report.add(label, max(rels.values()), STEP_REL, f"first diverging parameter: {first}")
        report.info[f"{kind}_update_rel"] = max(upd.values())

    # -- training on the same batches ------------------------------------------------------------------------------
    def train_row(dtype: str):
        a = TorchTwin(tw_mod, torch_device, dtype)
        b = MlxTwin(mx_mod, dtype)
        a.build(cfg_t, weights)
        b.build(cfg_m, weights)
        a.optimizer(hp)
        b.optimizer(hp)
        logit_diff = float(np.abs(a.logits(x0) - b.logits(x0)).max())
        sched = _schedules(tw_mod, steps)
        la, lb = a.train(batches, sched), b.train(batches, sched)
        return logit_diff, np.array(la), np.array(lb)

    _, la, lb = train_row("float32")
    diffs = np.abs(la - lb)
    bad = np.flatnonzero(~(diffs <= TRAIN_ABS))
    report.add(f"{steps} training steps (loss, every step)", diffs.max(), TRAIN_ABS,
               f"first diverging step: {int(bad[0]) + 1 if len(bad) else None}")  # fmt: skip
    report.info["train_loss"] = {
        "torch": [la[0], la[-1]],
        "mlx": [lb[0], lb[-1]],
        "lr_scale": PARITY_LR_SCALE,
    }

    if bf16:
        ld, la16, lb16 = train_row("bfloat16")
        report.add("bfloat16: forward logits (abs)", ld, BF16_LOGITS_ABS)
        report.add(f"bfloat16: loss after {steps} steps", abs(la16[-1] - lb16[-1]), BF16_LOSS_ABS)
        report.info["train_loss_bf16"] = {"torch": [la16[0], la16[-1]], "mlx": [lb16[0], lb16[-1]]}
    return report
