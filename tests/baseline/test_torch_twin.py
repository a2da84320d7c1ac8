"""train_torch.py and backends/torch_backend.py on the CPU: end-to-end CI runs in fixed-step mode (the summary,
the seed), the optimizer against float64 numpy references written here from docs/twins.md, Polar Express, rotary,
window masks and weight I/O. CUDA-only paths (torch.compile, FlexAttention, pinned copies) skip with a reason where
there is no GPU.

    pytest tests/baseline/test_torch_twin.py
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from tests.reference import ref_adamw, ref_muon, ref_polar_express  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU (compile, FlexAttention, pinned copies)")


@pytest.fixture(scope="module")
def tt():
    """train_torch imported under the ci profile (its hyperparameters read the profile at import), on the CPU even
    where a GPU is present: these tests check float32 CPU semantics; the CUDA tests below move models themselves."""
    from backends import torch_backend

    mp = pytest.MonkeyPatch()
    mp.setenv("AUTORESEARCH_PROFILE", "ci")
    mp.setenv("AUTORESEARCH_BACKEND", "cpu")
    torch_backend.detect.cache_clear()
    import train_torch

    yield train_torch
    mp.undo()
    torch_backend.detect.cache_clear()


def small_model(tt, pattern="SSSL", n_layer=2, T=16, vocab=64, seed=0):
    torch.manual_seed(seed)
    cfg = tt.GPTConfig(
        sequence_len=T,
        vocab_size=vocab,
        n_layer=n_layer,
        n_head=2,
        n_kv_head=2,
        n_embd=32,
        window_pattern=pattern,
    )
    model = tt.GPT(cfg)
    model.init_weights()
    with torch.no_grad():  # break init's zeros/identities so every weight matters
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


# ---------------------------------------------------------------------------------------------------------------
# End to end


STEPS = 50  # fixed-step mode: the same run on any machine; 50 x 1,024 tokens make over one pass of `prepared`


def run_script(script, data_dir, home, profile=f"ci@{STEPS}steps", seed=None, timeout=240):
    env = dict(os.environ)
    for var in ("AUTORESEARCH_TIME_BUDGET", "AUTORESEARCH_STEPS", "AUTORESEARCH_SEED"):
        env.pop(var, None)  # the profile name and `seed` say what runs
    env.update(
        AUTORESEARCH_DATA_DIR=str(data_dir),
        AUTORESEARCH_PROFILE=profile,
        AUTORESEARCH_BACKEND="cpu",
        AUTORESEARCH_HOME=str(home),
        PYTHONUNBUFFERED="1",
        PYTHONPATH=str(ROOT),
        OMP_NUM_THREADS="1",  # two OpenMP threads on a shared 2-core box stall for seconds
    )
    if seed is not None:
        env["AUTORESEARCH_SEED"] = str(seed)
    return subprocess.run(
        [sys.executable, str(script)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def step_losses(stdout):
    return [float(m) for m in re.findall(r"^step \d+ .*?\| loss ([0-9.]+)", stdout, re.M)]


@pytest.fixture(scope="module")
def ci_run(prepared, tmp_path_factory) -> str:
    """train_torch.py for STEPS fixed steps with the default seed."""
    out = run_script(ROOT / "train_torch.py", prepared, tmp_path_factory.mktemp("runhome"))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out.stdout


def test_ci_run_trains_and_prints_summary(ci_run, prepared):
    from common import manifest
    from common.profiles import DEFAULT_SEED, PROFILES
    from common.summary import parse_summary

    ci, stats = PROFILES["ci"], manifest.load(prepared)["stats"]
    s = parse_summary(ci_run)
    assert math.isfinite(s["val_bpb"]) and 0 < s["val_bpb"] < stats["unigram_bpb"]
    assert s["backend"] == "cpu" and s["profile"] == f"ci@{STEPS}steps" and s["depth"] == 2
    assert s["mfu_percent"] is None  # a CPU has no known bf16 peak: null, never the H100's
    for key in ("startup_seconds", "compile_seconds", "eval_seconds", "tokens_per_second"):
        assert s[key] > 0, key
    assert "dataset" in s
    # Fixed-step mode: no calibration, exactly STEPS steps, no stop at twice the budget.
    assert s["steps_mode"] == "fixed" and s["calibration_seconds"] == 0
    compiled = rf"^compile [\d.]+s \(2 steps\); fixed-step mode: {STEPS} steps$"
    assert re.search(compiled, ci_run, re.M), ci_run[:2000]
    assert "ms/step over" not in ci_run and "warning: stopping" not in ci_run
    assert s["num_steps"] == STEPS
    assert [int(k) for k in re.findall(r"^step (\d+) ", ci_run, re.M)] == list(range(STEPS))
    losses = step_losses(ci_run)
    assert len(losses) == STEPS and all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0] - 0.3, losses
    dts = [int(m) for m in re.findall(r"\| dt (\d+)ms", ci_run)]
    assert min(dts) > 0  # each step's own time, never a zero from a missed mark
    # The run's constants: the default seed, the profile's T, and its 4,096 eval tokens as whole T-token rows
    # (the val split holds them all: each row takes T + 1 tokens).
    rows = ci.eval_tokens // ci.max_seq_len
    assert stats["val_tokens"] >= rows * (ci.max_seq_len + 1)
    assert s["seed"] == DEFAULT_SEED and s["max_seq_len"] == ci.max_seq_len
    assert s["eval_tokens"] == rows * ci.max_seq_len
    # Tokens trained over the train split's tokens: over one pass here, so the warning shows, once.
    epochs = STEPS * ci.total_batch_size / stats["train_tokens"]
    assert epochs > 1 and s["epochs"] == pytest.approx(round(epochs, 4), abs=1e-9)
    warnings = re.findall(
        r"^warning: this run made ([\d.]+) passes over the ([\d,]+) train tokens", ci_run, re.M
    )
    assert warnings == [(f"{epochs:.2f}", f"{stats['train_tokens']:,}")]


def test_the_seed_fixes_the_run(ci_run, prepared, tmp_path):
    """$AUTORESEARCH_SEED picks the weights and the data order: on the CPU with one thread, two fixed-step
    runs under one seed agree to the bit; another seed is another run."""
    from common.summary import parse_summary

    outs = [run_script(ROOT / "train_torch.py", prepared, tmp_path, seed=7) for _ in range(2)]
    assert all(o.returncode == 0 for o in outs), outs[0].stdout[-3000:] + outs[0].stderr[-3000:]
    a, b = (parse_summary(o.stdout) for o in outs)
    assert a["seed"] == b["seed"] == 7
    assert a["num_steps"] == b["num_steps"] == STEPS
    assert step_losses(outs[0].stdout) == step_losses(outs[1].stdout)
    assert a["val_bpb"] == b["val_bpb"]
    assert a["val_bpb"] != parse_summary(ci_run)["val_bpb"]  # DEFAULT_SEED


@pytest.mark.parametrize(
    "profile, phase",
    [("ci", "calibration"), (f"ci@{STEPS}steps", "the compile steps")],
    ids=["time", "fixed"],
)
def test_nan_loss_fails_fast(prepared, tmp_path, profile, phase):
    script = tmp_path / "train_nan.py"
    src = (ROOT / "train_torch.py").read_text()
    assert "\nEMBEDDING_LR = " in src
    script.write_text(src.replace("\nEMBEDDING_LR = ", "\nEMBEDDING_LR = float('nan') or ", 1))
    out = run_script(script, prepared, tmp_path, profile=profile)
    assert out.returncode == 1
    assert re.search(rf"^FAIL: loss nan during {phase}$", out.stdout, re.M) and "val_bpb" not in out.stdout


# ---------------------------------------------------------------------------------------------------------------
# Optimizer vs float64 numpy references (docs/twins.md)


def t32(a):
    return torch.tensor(a, dtype=torch.float32)


@pytest.mark.parametrize(
    "grad_scale, eps",
    [("unit", 1e-10), ("tiny", 1e-10), ("tiny", 1e-8)],
    ids=["unit-grads", "tiny-grads-eps1e-10", "tiny-grads-eps1e-8"],
)
def test_adamw_step_matches_reference(tt, grad_scale, eps):
    # At unit gradients eps vanishes in rounding; at 1e-6..1e-9 from zero moments sqrt(v_hat) ~ |g| sits within a
    # few orders of eps, so eps moved inside the sqrt, or a constant in its place, changes the update (two eps
    # values: a hard-coded one fails at least one).
    rng = np.random.default_rng(0)
    p, m, v = rng.normal(size=(5, 7)) * 0.1, np.zeros((5, 7)), np.zeros((5, 7))
    tp, tm, tv = t32(p), t32(m), t32(v)
    hp = dict(lr=0.01, beta1=0.8, beta2=0.95, eps=eps, wd=0.1)
    for step in (1, 2, 3):
        g = rng.normal(size=(5, 7))
        if grad_scale == "tiny":
            g *= 10.0 ** rng.uniform(-9, -6, size=(5, 7))
        p, m, v = ref_adamw(p, g, m, v, step, **hp)
        tt.adamw_step(
            tp, t32(g), tm, tv, t32(step), *(t32(hp[k]) for k in ("lr", "beta1", "beta2", "eps", "wd"))
        )
    np.testing.assert_allclose(tp.numpy(), p, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(tm.numpy(), m, rtol=1e-5, atol=1e-6 * np.abs(m).max())
    np.testing.assert_allclose(tv.numpy(), v, rtol=1e-5, atol=1e-6 * np.abs(v).max())


@pytest.mark.parametrize("shape", [(3, 16, 8), (3, 8, 16), (2, 12, 12)])  # tall, wide, square
def test_muon_step_matches_reference(tt, shape):
    rng = np.random.default_rng(1)
    K, R, C = shape
    p = rng.normal(size=shape) * 0.1
    buf = np.zeros(shape)
    second = np.zeros((K, R, 1) if R >= C else (K, 1, C))
    tp, tbuf, tsec = t32(p), t32(buf), t32(second)
    hp = dict(lr=0.04, momentum=0.9, wd=0.2, beta2=0.95)
    for _ in range(3):
        g = rng.normal(size=shape)
        p, buf, second = ref_muon(p, g, buf, second, **hp)
        args = [t32(hp[k]) for k in ("momentum", "lr", "wd", "beta2")]
        tt.muon_step(tp, t32(g), tbuf, tsec, *args, 5, torch.float32)
    np.testing.assert_allclose(tbuf.numpy(), buf, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(tsec.numpy(), second, rtol=1e-3, atol=1e-7)
    np.testing.assert_allclose(tp.numpy(), p, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("shape", [(48, 16), (16, 48), (24, 24)], ids=["tall", "wide", "square"])
def test_polar_express_matches_float64_reference(tt, shape):
    # A spectrum spanning 100x (the MLX twin's test matrices), against the float64 reference.
    R, C = shape
    n = min(R, C)
    rng = np.random.default_rng(3)
    U, _ = np.linalg.qr(rng.standard_normal((R, n)))
    V, _ = np.linalg.qr(rng.standard_normal((C, n)))
    G = (U * np.logspace(-2, 0, n)) @ V.T * 7.0
    ref = ref_polar_express(G)
    X = tt.polar_express(t32(G[None]), 5, torch.float32)
    assert X.dtype == torch.float32
    np.testing.assert_allclose(X[0].numpy(), ref, atol=2e-5)  # measured 1.2-2.1e-6
    # bf16 (the CUDA path) rounds every product to 8 significant bits (2^-9 relative), and the first iterations'
    # slope (a = 8.2, then 4.0) multiplies that error in the small singular values: measured 3-8.5% of ||ref||.
    Xb = tt.polar_express(t32(G[None]), 5, torch.bfloat16)
    assert Xb.dtype == torch.bfloat16 and torch.isfinite(Xb).all()
    err = np.linalg.norm(Xb[0].double().numpy() - ref) / np.linalg.norm(ref)
    assert err < 0.12, err


def test_optimizer_groups_follow_the_contract(tt):
    model = small_model(tt, n_layer=2)
    opt = tt.setup_optimizer(model, 0.004, 0.6, 0.04, 0.2, (0.8, 0.95), 0.5)
    scale = (32 / 768) ** -0.5
    adam = {tuple(g["names"]): g for g in opt.param_groups if g["kind"] == "adamw"}
    assert adam[("lm_head.weight",)]["lr"] == pytest.approx(0.004 * scale)
    assert adam[("transformer.wte.weight",)]["lr"] == pytest.approx(0.6 * scale)
    assert adam[("value_embeds.1.weight",)]["lr"] == pytest.approx(0.6 * scale)
    assert adam[("resid_lambdas",)]["lr"] == pytest.approx(0.005)
    assert adam[("x0_lambdas",)]["lr"] == 0.5 and adam[("x0_lambdas",)]["betas"] == (0.96, 0.95)
    assert all(g["eps"] == 1e-10 and g["weight_decay"] == 0.0 for g in adam.values())
    muon = [g for g in opt.param_groups if g["kind"] == "muon"]
    params = dict(model.named_parameters())
    blocks = {k for k, p in params.items() if k.startswith("transformer.h.") and p.ndim == 2}
    assert {n for g in muon for n in g["names"]} == blocks
    assert all(len({params[n].shape for n in g["names"]}) == 1 for g in muon)
    x = torch.randint(0, 64, (2, 16))
    before = {k: p.detach().clone() for k, p in params.items()}
    model(x, x).backward()
    opt.set_schedule(1.0, 0.9, 0.2)
    opt.step()  # one full step through every group, eagerly
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert all(
        not torch.equal(before[k], p)
        for k, p in params.items()
        if not k.endswith(("c_proj.weight", "ve_gate.weight"))
    )


def test_calibration_reset_gives_a_fresh_run(tt):
    # main() trains throwaway calibration steps, then restores the weights and resets the optimizer: the real run
    # must then be exactly the run a fresh model and optimizer would make.
    def fresh():
        model = small_model(tt, n_layer=2, seed=3)
        opt = tt.setup_optimizer(model, 0.004, 0.6, 0.04, 0.2, (0.8, 0.95), 0.5)
        return model, opt, tt.make_train_step(model, opt, compiled=False)

    torch.manual_seed(0)
    batches = [([torch.randint(0, 64, (2, 16))], [torch.randint(0, 64, (2, 16))]) for _ in range(3)]
    a, opt_a, step_a = fresh()
    initial = {k: v.detach().to("cpu", copy=True) for k, v in a.state_dict().items()}
    for x, y in batches:  # calibration
        step_a(x, y)
    with torch.no_grad():
        for k, v in a.state_dict().items():
            v.copy_(initial[k])
    opt_a.reset()
    b, _, step_b = fresh()
    for x, y in batches[:2]:
        torch.testing.assert_close(step_a(x, y), step_b(x, y), rtol=0, atol=0)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(va, vb, rtol=0, atol=0, msg=k)


# ---------------------------------------------------------------------------------------------------------------
# Model pieces


def test_window_sizes_and_flops(tt):
    model = small_model(tt, pattern="SSSL", n_layer=6, T=16)  # n_embd 32, 2 heads of 16, vocab 64
    assert model._window_sizes == [8, 8, 8, 16, 8, 16]  # cycled, last layer always long
    # Counted by hand (upstream's convention: 6 FLOPs per matmul weight per token, forward + backward).
    # Per layer: c_q, c_k, c_v, c_proj 4 x 32*32 = 4,096; c_fc 128*32 = 4,096; mlp c_proj 32*128 = 4,096.
    # ve_gate (2 heads x 32 channels = 64) on layers 1, 3, 5 (alternate layers ending at the last).
    # lm_head 64*32 = 2,048. Not matmuls: wte, value_embeds (lookups) and the per-layer lambdas.
    matmul_weights = 6 * (4_096 + 4_096 + 4_096) + 3 * 64 + 2_048  # = 75,968
    # Attention per layer per token: q.k and p.v over each visible key, 2 FLOPs x 32 channels (2 heads x 16)
    # each, forward; x3 for training: 12 * 32 * keys, with keys = the window (8) or T (16).
    attention = 12 * 32 * (8 + 8 + 8 + 16 + 8 + 16)  # = 24,576
    assert model.estimate_flops() == 6 * matmul_weights + attention == 480_384


def test_forward_shapes_and_reductions(tt):
    model = small_model(tt)
    x = torch.randint(0, 64, (3, 16))
    y = torch.randint(0, 64, (3, 16))
    assert model(x).shape == (3, 16, 64)
    per_token = model(x, y, reduction="none")
    assert per_token.shape == (48,) and per_token.dtype == torch.float32
    torch.testing.assert_close(model(x, y), per_token.mean())
    assert model(x).abs().max() <= 15  # soft cap


# ---------------------------------------------------------------------------------------------------------------
# Weights and the eval adapter


def canonical_names(n_layer):
    names = ["transformer.wte.weight", "lm_head.weight", "resid_lambdas", "x0_lambdas"]
    for i in range(n_layer):
        p = f"transformer.h.{i}."
        names += [p + f"attn.c_{n}.weight" for n in ("q", "k", "v", "proj")] + [
            p + "mlp.c_fc.weight",
            p + "mlp.c_proj.weight",
        ]
        if i % 2 == (n_layer - 1) % 2:
            names += [p + "attn.ve_gate.weight", f"value_embeds.{i}.weight"]
    return sorted(names)


def test_export_import_round_trip(tt, tmp_path):
    tb = tt.tb
    a, b = small_model(tt, n_layer=3, seed=0), small_model(tt, n_layer=3, seed=1)
    w = tb.export_weights(a)
    assert sorted(w) == canonical_names(3)
    assert all(v.dtype == np.float32 for v in w.values())
    assert w["transformer.h.0.attn.c_q.weight"].shape == (32, 32) and w["value_embeds.2.weight"].shape == (
        64,
        32,
    )
    x = torch.randint(0, 64, (2, 16))
    assert not torch.equal(a(x), b(x))
    tb.import_weights(b, w)
    torch.testing.assert_close(b(x), a(x), rtol=0, atol=0)
    path = tmp_path / "w.safetensors"
    tb.save_weights(a, path)
    c = small_model(tt, n_layer=3, seed=2)
    tb.load_weights(c, path)
    torch.testing.assert_close(c(x), a(x), rtol=0, atol=0)


def test_import_is_strict(tt):
    tb = tt.tb
    model = small_model(tt, n_layer=2)
    w = tb.export_weights(model)
    with pytest.raises(KeyError, match="missing.*lm_head"):
        tb.import_weights(model, {k: v for k, v in w.items() if k != "lm_head.weight"})
    with pytest.raises(KeyError, match="unexpected.*extra"):
        tb.import_weights(model, {**w, "extra": np.zeros(1, np.float32)})
    with pytest.raises(ValueError, match="resid_lambdas"):
        tb.import_weights(model, {**w, "resid_lambdas": np.zeros(3, np.float32)})


def test_eval_adapter_chunks_and_pads(tt):
    model = small_model(tt)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 64, (5, 16)).astype(np.int32)
    y = rng.integers(0, 64, (5, 16)).astype(np.int32)
    whole = tt.tb.make_loss_fn(model, torch.device("cpu"))(x, y)
    chunked = tt.tb.make_loss_fn(model, torch.device("cpu"), max_rows=2)(x, y)  # 2 + 2 + 1 (padded to 2)
    assert whole.dtype == np.float32 and whole.shape == (80,)
    np.testing.assert_allclose(chunked, whole, rtol=1e-5, atol=1e-6)
    ref = model(torch.from_numpy(x), torch.from_numpy(y), reduction="none").detach().numpy()
    np.testing.assert_allclose(whole, ref, rtol=1e-5, atol=1e-6)


def test_device_choice_and_override(tt, monkeypatch):
    tb = tt.tb
    monkeypatch.delenv("AUTORESEARCH_BACKEND")  # the fixture pins the CPU: here, detect for real
    tb.detect.cache_clear()
    try:
        dev = tb.detect()
        assert dev.type in ("cuda", "mps", "cpu") and dev.reason
        assert dev.type == ("cuda" if CUDA else dev.type)
        assert tb.COMPUTE_DTYPE == (torch.bfloat16 if dev.type == "cuda" else torch.float32)
        assert tb.device_name()
        keep = torch.ones(1024, device=dev.type)  # something allocated on the device, so its peak is > 0
        tb.sync()
        assert tb.peak_memory_mb() > 0 and keep.sum().item() == 1024
        tb.detect.cache_clear()
        monkeypatch.setenv("AUTORESEARCH_BACKEND", "cpu")
        assert tb.detect().type == "cpu" and "AUTORESEARCH_BACKEND" in tb.detect().reason
        tb.detect.cache_clear()
        monkeypatch.setenv("AUTORESEARCH_BACKEND", "tpu")
        with pytest.raises(RuntimeError, match="choose one of cuda, mps, cpu"):
            tb.detect()
    finally:
        monkeypatch.delenv("AUTORESEARCH_BACKEND")
        tb.detect.cache_clear()


def test_import_has_no_side_effects():
    # Importing the script must not train, print or touch the GPU (the parity tool and tests import it).
    code = "import torch, train_torch; print(torch.cuda.is_initialized())"
    env = dict(os.environ, AUTORESEARCH_PROFILE="ci")
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout == "False\n"


# ---------------------------------------------------------------------------------------------------------------
# CUDA only


@needs_cuda
def test_cuda_compiled_flex_matches_eager_sdpa(tt):
    model = small_model(tt, pattern="SSSL", n_layer=4, T=256, vocab=128).cuda()
    x = torch.randint(0, 128, (2, 256), device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        ref = model(x, x, reduction="none")  # eager: SDPA with boolean window masks
        tt.K.prepare_attention(256, model._window_sizes, x.device, flex=True)
        got = torch.compile(model, dynamic=False)(x, x, reduction="none")  # FlexAttention block masks
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, ref, rtol=2e-2, atol=2e-2)


@needs_cuda
def test_cuda_relu_squared_under_autocast(tt, monkeypatch):
    """The compiled bf16 model's gradients match eager float32 with plain autograd of relu(x)^2 (the kernel's saved
    dtype under autocast: tests/test_kernels.py)."""
    model = small_model(tt, pattern="L", n_layer=2, T=128, vocab=128).cuda()
    idx = torch.randint(0, 128, (4, 128), device="cuda")

    def grads(fn, autocast):
        model.zero_grad()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
            fn(idx, idx).backward()
        return {n: p.grad.clone() for n, p in model.named_parameters()}

    got = grads(torch.compile(model, dynamic=False), True)
    monkeypatch.setattr(tt.MLP, "forward", lambda self, x: self.c_proj(F.relu(self.c_fc(x)).square()))
    ref = grads(model, False)
    for name in ref:
        err = (got[name] - ref[name]).norm() / ref[name].norm()
        assert err < 5e-2, (name, err.item())


@needs_cuda
def test_cuda_pinned_async_copies(tt):
    a = np.arange(12, dtype=np.int32).reshape(3, 4)[:, 1:]  # non-contiguous, like the loader's x and y
    t = tt.tb.to_device(a, torch.device("cuda"))
    assert t.is_cuda and np.array_equal(t.cpu().numpy(), a)
    assert tt.tb.async_item(torch.tensor(2.5, device="cuda"))() == 2.5


@needs_cuda
def test_cuda_polar_express_bf16_finite(tt):
    g = torch.randn(4, 2048, 512, device="cuda")
    X = tt.polar_express(g, 5, torch.bfloat16)
    assert torch.isfinite(X).all()
    s = torch.linalg.svdvals(X[0].float())
    assert s.min() > 0.3 and s.max() < 1.6
