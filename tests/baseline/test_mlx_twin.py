"""train_mlx.py and backends/mlx_backend.py on the CPU: end-to-end CI runs on the demo corpus (fixed steps and
the time budget), the optimizer against float64 numpy references written here from docs/twins.md, Polar Express,
compiled vs eager steps, schedules after compilation, the calibration reset, bf16 dtypes, window masks and weight
I/O under the canonical names.

    pytest tests/baseline/test_mlx_twin.py
"""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

mx = pytest.importorskip("mlx.core")
nn = pytest.importorskip("mlx.nn")
from mlx.utils import tree_flatten  # noqa: E402

from tests.conftest import prepare_isolated  # noqa: E402
from tests.reference import ref_adamw, ref_muon, ref_polar_express  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
OPENBLAS = "/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3"


@pytest.fixture(scope="module")
def tm():
    """train_mlx imported under the ci profile (its hyperparameters read the profile at import)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("AUTORESEARCH_PROFILE", "ci")
    try:
        yield importlib.import_module("train_mlx")
    finally:
        mp.undo()


@pytest.fixture(scope="module")
def mb():
    return importlib.import_module("backends.mlx_backend")


def tiny_config(tm, n_layer=3, seq=16, vocab=64):
    return tm.GPTConfig(
        sequence_len=seq,
        vocab_size=vocab,
        n_layer=n_layer,
        n_head=2,
        n_kv_head=2,
        n_embd=64,
        window_pattern="SSSL",
    )


def tiny_model(tm, seed=0, **kw):
    mx.random.seed(seed)
    model = tm.GPT(tiny_config(tm, **kw))
    model.init_weights()
    # Non-zero output projections and gates, so every parameter gets a gradient from the first step.
    for block in model.transformer["h"]:
        block.attn.c_proj.weight = 0.02 * mx.random.normal(block.attn.c_proj.weight.shape)
        block.mlp.c_proj.weight = 0.02 * mx.random.normal(block.mlp.c_proj.weight.shape)
        if block.attn.ve_gate is not None:
            block.attn.ve_gate.weight = 0.1 * mx.random.normal(block.attn.ve_gate.weight.shape)
    mx.eval(model.parameters())
    return model


def batches(n, accum=2, B=2, T=16, vocab=64, seed=0):
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, vocab, (n, accum, B, T + 1)).astype(np.int32)
    return [(mx.array(r[..., :-1]), mx.array(r[..., 1:])) for r in rows]


def new_optimizer(tm, model):
    return tm.setup_optimizer(
        model, unembedding_lr=0.004, embedding_lr=0.6, matrix_lr=0.04, weight_decay=0.2, adam_betas=(0.8, 0.95),
        scalar_lr=0.5,
    )  # fmt: skip


def params_np(model) -> dict:
    return {k: np.array(v) for k, v in tree_flatten(model.parameters())}


# ---------------------------------------------------------------------------------------------------------------------
# End to end: `python train_mlx.py` with the ci profile on the demo corpus


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory) -> Path:
    """A small demo corpus (common.demo), prepared with a 512-token vocabulary."""
    from common.demo import write_demo_corpus

    text = tmp_path_factory.mktemp("demo_text")
    write_demo_corpus(text, train_docs=400, val_docs=60, docs_per_shard=200)
    return prepare_isolated(text, tmp_path_factory)


STEPS = 30  # fixed-step mode: the same run on any machine, long enough for the loss to fall


def run_train_mlx(demo_data, home, profile) -> str:
    env = dict(os.environ)
    for var in ("AUTORESEARCH_TIME_BUDGET", "AUTORESEARCH_STEPS", "AUTORESEARCH_SEED"):
        env.pop(var, None)  # the profile name says what runs; the seed is the default
    env.update(
        AUTORESEARCH_DATA_DIR=str(demo_data),
        AUTORESEARCH_PROFILE=profile,
        AUTORESEARCH_HOME=str(home),
        PYTHONUNBUFFERED="1",
    )
    if sys.platform == "linux" and os.path.exists(OPENBLAS):
        env["LD_PRELOAD"] = OPENBLAS  # MLX's bundled reference BLAS is ~30x slower, same results
    proc = subprocess.run(
        [sys.executable, "train_mlx.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


@pytest.fixture(scope="module")
def ci_run(demo_data, tmp_path_factory) -> str:
    """train_mlx.py for STEPS fixed steps."""
    return run_train_mlx(demo_data, tmp_path_factory.mktemp("runhome"), f"ci@{STEPS}steps")


@pytest.fixture(scope="module")
def ci_time_run(demo_data, tmp_path_factory) -> str:
    """train_mlx.py on the ci profile's time budget: the calibrated step count."""
    return run_train_mlx(demo_data, tmp_path_factory.mktemp("runhome"), "ci")


@pytest.mark.slow
def test_ci_run_prints_a_parseable_summary(ci_run, demo_data):
    from common import manifest
    from common.profiles import DEFAULT_SEED, PROFILES
    from common.summary import parse_summary

    ci, stats = PROFILES["ci"], manifest.load(demo_data)["stats"]
    s = parse_summary(ci_run)
    assert np.isfinite(s["val_bpb"]) and s["val_bpb"] > 0
    assert s["backend"] == "mlx" and s["profile"] == f"ci@{STEPS}steps" and s["depth"] == 2
    assert s["training_seconds"] > 0
    assert s["mfu_percent"] is None  # a CPU has no known bf16 peak
    keys = ("startup_seconds", "compile_seconds", "eval_seconds", "tokens_per_second")
    for key in (*keys, "peak_vram_mb"):
        assert s[key] > 0, key
    assert s["total_seconds"] >= s["training_seconds"] + s["compile_seconds"]
    # Fixed-step mode: no calibration, exactly STEPS steps, no stop at twice the budget.
    assert s["steps_mode"] == "fixed" and s["calibration_seconds"] == 0
    compiled = rf"^compile [\d.]+s \(2 steps\); fixed-step mode: {STEPS} steps$"
    assert re.search(compiled, ci_run, re.M), ci_run[:2000]
    assert "ms/step over" not in ci_run and "warning: stopping" not in ci_run
    assert s["num_steps"] == STEPS
    assert [int(k) for k in re.findall(r"^step (\d+) ", ci_run, re.M)] == list(range(STEPS))
    # The run's constants: the default seed, the profile's T, and its 4,096 eval tokens as whole T-token rows
    # (the val split holds them all: each row takes T + 1 tokens).
    rows = ci.eval_tokens // ci.max_seq_len
    assert stats["val_tokens"] >= rows * (ci.max_seq_len + 1)
    assert s["seed"] == DEFAULT_SEED and s["max_seq_len"] == ci.max_seq_len
    assert s["eval_tokens"] == rows * ci.max_seq_len
    # Tokens trained over the train split's tokens: well under one pass of the demo corpus, so no warning.
    epochs = STEPS * ci.total_batch_size / stats["train_tokens"]
    assert epochs < 1 and s["epochs"] == pytest.approx(round(epochs, 4), abs=1e-9)
    assert "passes over the" not in ci_run


@pytest.mark.slow
def test_ci_run_loss_falls_and_beats_the_unigram_baseline(ci_run, demo_data):
    from common import manifest
    from common.summary import parse_summary

    losses = [float(m) for m in re.findall(r"^step \d+ .*\| loss ([\d.]+) \|", ci_run, re.M)]
    assert len(losses) == STEPS
    assert losses[-1] < 0.8 * losses[0], losses
    unigram = manifest.load(demo_data)["stats"]["unigram_bpb"]
    assert parse_summary(ci_run)["val_bpb"] < unigram


@pytest.mark.slow
def test_time_budget_run_trains_its_calibrated_step_count(ci_time_run):
    """The time-budget mode: asserts only what holds for any step count, so a slow machine passes too."""
    from common.summary import parse_summary

    s = parse_summary(ci_time_run)
    assert np.isfinite(s["val_bpb"]) and s["profile"] == "ci" and s["steps_mode"] == "time"
    assert s["calibration_seconds"] > 0 and s["num_steps"] >= 1
    assert s["total_seconds"] >= s["training_seconds"] + s["compile_seconds"] + s["calibration_seconds"]
    # The calibration fixed the step count; the loop ran that many (fewer only past twice the budget).
    m = re.search(r"^compile .* over \d+ steps -> (\d+) steps for 6s$", ci_time_run, re.M)
    assert m, ci_time_run[:2000]
    stop = re.search(r"^warning: stopping at step (\d+): twice the 6s budget", ci_time_run, re.M)
    assert s["num_steps"] == (int(stop.group(1)) + 1 if stop else int(m.group(1)))
    steps = [int(k) for k in re.findall(r"^step (\d+) ", ci_time_run, re.M)]
    assert steps == list(range(s["num_steps"]))


# ---------------------------------------------------------------------------------------------------------------------
# Optimizer math against float64 numpy references (written from docs/twins.md, independently of train_mlx)


@pytest.mark.parametrize("shape", [(3, 24, 8), (2, 8, 24), (2, 16, 16)], ids=["tall", "wide", "square"])
def test_muon_step_matches_float64_reference(tm, shape):
    rng = np.random.default_rng(1)
    K, R, C = shape
    p, g, buf = (rng.standard_normal(shape) for _ in range(3))
    second = rng.random((K, R, 1) if R >= C else (K, 1, C)) * 0.01
    args = dict(momentum=0.9, lr=0.02, wd=0.1, beta2=0.95)
    f32 = lambda a: mx.array(a.astype(np.float32))  # noqa: E731
    out = tm.muon_step(
        f32(p), f32(g), f32(buf), f32(second), mx.array(args["momentum"]), mx.array(args["lr"]),
        mx.array(args["wd"]), args["beta2"], 5,
    )  # fmt: skip
    ref = ref_muon(p, g, buf, second, **args)
    for got, want, name in zip(out, ref, ("params", "momentum_buffer", "second_momentum_buffer")):
        assert got.dtype == mx.float32 and got.shape == want.shape, name
        np.testing.assert_allclose(np.array(got), want, rtol=1e-4, atol=2e-6, err_msg=name)
    assert not np.allclose(np.array(out[0]), p)  # it moved


def test_adamw_step_matches_float64_reference(tm):
    rng = np.random.default_rng(2)
    p, g, m = (rng.standard_normal((5, 7)) for _ in range(3))
    v = rng.random((5, 7)) * 0.1
    args = dict(step=3.0, lr=0.01, beta1=0.8, beta2=0.95, eps=1e-10, wd=0.1)
    f32 = lambda a: mx.array(a.astype(np.float32))  # noqa: E731
    out = tm.adamw_step(
        f32(p), f32(g), f32(m), f32(v), mx.array(args["step"]), mx.array(args["lr"]), args["beta1"], args["beta2"],
        args["eps"], args["wd"],
    )  # fmt: skip
    for got, want in zip(out, ref_adamw(p, g, m, v, **args)):
        np.testing.assert_allclose(np.array(got), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("eps", [1e-10, 1e-8])  # the groups' eps and another: a hard-coded constant fails one
def test_adamw_eps_counts_where_second_moments_are_tiny(tm, eps):
    # Gradients of 1e-6..1e-9 from zero moments: sqrt(v_hat) ~ |g| sits within a few orders of eps, so eps moved
    # inside the sqrt, or a constant in its place, changes the update (at v ~ 0.1 it vanishes in rounding).
    rng = np.random.default_rng(8)
    p, m, v = rng.standard_normal((5, 7)) * 0.1, np.zeros((5, 7)), np.zeros((5, 7))
    f32 = lambda a: mx.array(a.astype(np.float32))  # noqa: E731
    got = [f32(p), f32(m), f32(v)]
    hp = dict(lr=0.01, beta1=0.8, beta2=0.95, eps=eps, wd=0.1)
    for step in (1, 2, 3):
        g = rng.standard_normal((5, 7)) * 10.0 ** rng.uniform(-9, -6, size=(5, 7))
        p, m, v = ref_adamw(p, g, m, v, step, **hp)
        got = tm.adamw_step(
            got[0], f32(g), got[1], got[2], mx.array(float(step)), mx.array(hp["lr"]), hp["beta1"], hp["beta2"],
            hp["eps"], hp["wd"],
        )  # fmt: skip
    np.testing.assert_allclose(np.array(got[0]), p, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(np.array(got[1]), m, rtol=1e-5, atol=1e-6 * np.abs(m).max())
    np.testing.assert_allclose(np.array(got[2]), v, rtol=1e-5, atol=1e-6 * np.abs(v).max())


def test_polar_express_is_near_orthogonal_and_finite_in_bf16(tm):
    # The 5-step polynomial maps any singular value in [1e-3, 1] (after the Frobenius normalisation) into
    # [0.8589, 1.1411], not exactly to 1: that is the band to hold, on matrices whose spectrum spans 100x.
    rng = np.random.default_rng(3)
    for R, C in ((48, 16), (16, 48), (24, 24)):
        n = min(R, C)
        U, _ = np.linalg.qr(rng.standard_normal((R, n)))
        V, _ = np.linalg.qr(rng.standard_normal((C, n)))
        G = (U * np.logspace(-2, 0, n)) @ V.T * 7.0
        for dtype in (mx.float32, mx.bfloat16):
            X = tm.polar_express(mx.array(G[None].astype(np.float32)).astype(dtype))
            assert X.dtype == mx.float32  # iterations always run in float32
            X = np.array(X[0]).astype(np.float64)
            assert np.isfinite(X).all()
            sv = np.linalg.svd(X, compute_uv=False)
            assert 0.85 < sv.min() and sv.max() < 1.15, (R, C, dtype, sv.min(), sv.max())
        # and it is the same function as the float64 reference
        np.testing.assert_allclose(
            np.array(tm.polar_express(mx.array(G[None].astype(np.float32))))[0],
            ref_polar_express(G),
            atol=2e-5,
        )


# ---------------------------------------------------------------------------------------------------------------------
# The compiled step


def test_compiled_step_equals_uncompiled_step(tm, mb):
    models = [tiny_model(tm), tiny_model(tm, seed=9)]
    mb.import_weights(models[1], mb.export_weights(models[0]))
    results = []
    for model, compiled in zip(models, (False, True)):
        opt = new_optimizer(tm, model)
        step = tm.make_train_step(model, opt, compiled=compiled)
        losses = []
        for i, (x, y) in enumerate(batches(3)):
            opt.set_schedule(1.0 - 0.2 * i, tm.get_muon_momentum(i), tm.get_weight_decay(0.1 * i))
            loss = step(x, y)
            mx.eval(loss, model.state, opt.state)
            losses.append(loss.item())
        results.append((losses, params_np(model)))
    (l_eager, p_eager), (l_comp, p_comp) = results
    np.testing.assert_allclose(l_comp, l_eager, rtol=1e-5)
    assert p_comp.keys() == p_eager.keys()
    for k in p_eager:
        np.testing.assert_allclose(p_comp[k], p_eager[k], rtol=1e-4, atol=1e-5, err_msg=k)


def test_schedules_reach_the_compiled_step(tm, mb):
    model = tiny_model(tm)
    opt = new_optimizer(tm, model)
    step = tm.make_train_step(model, opt, compiled=True)
    (x1, y1), (x2, y2) = batches(2)
    adamw = [n for g in opt.param_groups if g["kind"] == "adamw" for n in g["names"]]
    muon = [n for g in opt.param_groups if g["kind"] == "muon" for n in g["names"]]

    opt.set_schedule(1.0, 0.85, 0.2)
    before = params_np(model)
    mx.eval(step(x1, y1), model.state, opt.state)  # compiles
    after = params_np(model)
    assert all(not np.array_equal(after[n], before[n]) for n in adamw + muon)

    # lr multiplier 0 after compilation: nothing moves (a frozen Python float would keep lr at 1)
    opt.set_schedule(0.0, 0.85, 0.2)
    mx.eval(step(x2, y2), model.state, opt.state)
    now = params_np(model)
    for n in adamw + muon:
        np.testing.assert_array_equal(now[n], after[n], err_msg=n)

    # Muon momentum after compilation: from the same weights and state, 0.5 and 0.95 give different updates
    weights, state = mb.export_weights(model), dict(opt.state)
    deltas = []
    for momentum in (0.5, 0.95):
        mb.import_weights(model, weights)
        opt.state.update(state)
        opt.set_schedule(1.0, momentum, 0.2)
        mx.eval(step(x2, y2), model.state, opt.state)
        deltas.append({n: params_np(model)[n] - weights[n] for n in muon})
    assert all(not np.allclose(deltas[0][n], deltas[1][n]) for n in muon)


def test_calibration_reset_gives_a_fresh_run(tm):
    # main() trains throwaway calibration steps through the compiled step, then restores the weights and resets the
    # optimizer: the real run, through that same compiled step, must then be exactly the run a fresh model and
    # optimizer would make. The compiled step holds the optimizer's state containers, so the reset must refill
    # them rather than replace them.
    def fresh():
        model = tiny_model(tm, seed=3)
        opt = new_optimizer(tm, model)
        return model, opt, tm.make_train_step(model, opt, compiled=True)

    data = batches(4, seed=1)
    a, opt_a, step_a = fresh()
    initial = a.parameters()
    before = params_np(a)
    for i, (x, y) in enumerate(data):  # calibration: a different schedule, and state built up
        opt_a.set_schedule(1.0, tm.get_muon_momentum(i), tm.get_weight_decay(0.0))
        mx.eval(step_a(x, y), a.state, opt_a.state)
    assert all(not np.array_equal(v, before[k]) for k, v in params_np(a).items())
    assert all(np.array_equal(np.array(v), before[k]) for k, v in tree_flatten(initial))  # the kept copy
    a.update(initial)
    opt_a.reset()
    b, opt_b, step_b = fresh()
    for i, (x, y) in enumerate(data[:2]):
        losses = []
        for model, opt, step in ((a, opt_a, step_a), (b, opt_b, step_b)):
            opt.set_schedule(1.0 - 0.3 * i, tm.get_muon_momentum(i), tm.get_weight_decay(0.3 * i))
            loss = step(x, y)
            mx.eval(loss, model.state, opt.state)
            losses.append(loss.item())
        assert losses[0] == losses[1], (i, losses)
    pa, pb = params_np(a), params_np(b)
    for k in pb:
        np.testing.assert_array_equal(pa[k], pb[k], err_msg=k)
    sa, sb = dict(tree_flatten(opt_a.state)), dict(tree_flatten(opt_b.state))
    assert sa.keys() == sb.keys()
    for k in sb:
        np.testing.assert_array_equal(np.array(sa[k]), np.array(sb[k]), err_msg=k)


# ---------------------------------------------------------------------------------------------------------------------
# Model: parameters, dtypes, windows


def canonical_shapes(n_layer, d, vocab, n_head, head_dim):
    """docs/twins.md's name table for a model shape."""
    kv = n_head * head_dim
    out = {"transformer.wte.weight": (vocab, d), "lm_head.weight": (vocab, d)}
    out |= {"resid_lambdas": (n_layer,), "x0_lambdas": (n_layer,)}
    for i in range(n_layer):
        h = f"transformer.h.{i}."
        out |= {
            h + "attn.c_q.weight": (kv, d),
            h + "attn.c_k.weight": (kv, d),
            h + "attn.c_v.weight": (kv, d),
        }
        out |= {
            h + "attn.c_proj.weight": (d, d),
            h + "mlp.c_fc.weight": (4 * d, d),
            h + "mlp.c_proj.weight": (d, 4 * d),
        }
        if i % 2 == (n_layer - 1) % 2:
            out |= {h + "attn.ve_gate.weight": (n_head, 32), f"value_embeds.{i}.weight": (vocab, kv)}
    return out


@pytest.mark.parametrize("n_layer", [2, 3])
def test_parameters_have_canonical_names_and_no_buffers(tm, n_layer):
    model = tiny_model(tm, n_layer=n_layer)
    got = {k: tuple(v.shape) for k, v in tree_flatten(model.parameters())}
    assert got == canonical_shapes(n_layer, 64, 64, 2, 32)
    assert all(v.dtype == mx.float32 for _, v in tree_flatten(model.parameters()))  # float32 master weights
    assert not [k for k in got if "_cos" in k or "_sin" in k or "_mask" in k or "_window" in k]
    assert "_cos" in model and "_window_sizes" in model  # they exist, just not as parameters
    assert model.num_params() == sum(int(np.prod(s)) for s in got.values())


def test_bf16_forward_keeps_the_residual_stream_in_bf16(tm, monkeypatch):
    monkeypatch.setattr(tm, "COMPUTE_DTYPE", mx.bfloat16)
    seen = []
    for cls in (tm.Block, tm.CausalSelfAttention, tm.MLP):
        original = cls.__call__

        def record(self, x, *args, _original=original, _name=cls.__name__):
            out = _original(self, x, *args)
            seen.append((_name, x.dtype, out.dtype))
            return out

        monkeypatch.setattr(cls, "__call__", record)
    model = tiny_model(tm)
    x, y = batches(1, accum=1)[0]
    logits = model(x[0])
    loss, grads = mx.value_and_grad(lambda p: (model.update(p), model(x[0], y[0]))[1])(
        model.trainable_parameters()
    )
    assert len(seen) == 2 * 3 * 3
    assert all(i == mx.bfloat16 and o == mx.bfloat16 for _, i, o in seen), seen
    assert logits.dtype == mx.float32 and loss.dtype == mx.float32  # logits and loss in float32
    assert all(g.dtype == mx.float32 for _, g in tree_flatten(grads))  # gradients reach the float32 masters
    assert np.isfinite(loss.item())


def test_flops_per_token_by_hand(tm):
    model = tiny_model(tm)  # 3 layers, n_embd 64, 2 heads of 32, vocab 64, T 16, SSSL
    assert model._window_sizes == [8, 8, 16]  # the last layer always long
    # Counted by hand (upstream's convention: 6 FLOPs per matmul weight per token, forward + backward).
    # Per layer: c_q, c_k, c_v, c_proj 4 x 64*64 = 16,384; c_fc 256*64 = 16,384; mlp c_proj 64*256 = 16,384.
    # ve_gate (2 heads x 32 channels = 64) on layers 0 and 2 (alternate layers ending at the last).
    # lm_head 64*64 = 4,096. Not matmuls: wte, value_embeds (lookups) and the per-layer lambdas.
    matmul_weights = 3 * (16_384 + 16_384 + 16_384) + 2 * 64 + 4_096  # = 151,680
    # Attention per layer per token: q.k and p.v over each visible key, 2 FLOPs x 64 channels (2 heads x 32)
    # each, forward; x3 for training: 12 * 64 * keys, with keys = the window (8) or T (16).
    attention = 12 * 64 * (8 + 8 + 16)  # = 24,576
    assert model.estimate_flops() == 6 * matmul_weights + attention == 934_656


def test_window_sizes_follow_the_pattern_and_reach_the_kernel(tm, monkeypatch):
    T = 16
    model = tiny_model(tm, n_layer=4, seq=T)  # SSSL -> S S S L
    assert model._window_sizes == [8, 8, 8, 16]
    seen = []
    attention = tm.K.attention
    monkeypatch.setattr(tm.K, "attention", lambda q, k, v, window: seen.append(window) or attention(q, k, v, window))
    x = mx.array(np.random.default_rng(0).integers(0, 64, (2, T)).astype(np.int32))
    model(x, x)
    assert seen == [8, 8, 8, 16]

# ---------------------------------------------------------------------------------------------------------------------
# Backend: weight I/O, eval adapter


def test_export_import_round_trip(tm, mb, tmp_path):
    a, b = tiny_model(tm, seed=1), tiny_model(tm, seed=2)
    wa = mb.export_weights(a)
    assert {k: v.shape for k, v in wa.items()} == canonical_shapes(3, 64, 64, 2, 32)
    assert all(v.dtype == np.float32 for v in wa.values())
    mb.import_weights(b, wa)
    assert all(np.array_equal(v, mb.export_weights(b)[k]) for k, v in wa.items())

    path = tmp_path / "w.safetensors"
    mb.save_weights(a, path)
    loaded = mb.load_safetensors(path)
    assert loaded.keys() == wa.keys() and all(np.array_equal(loaded[k], wa[k]) for k in wa)
    c = tiny_model(tm, seed=3)
    mb.load_weights(c, path)
    x = batches(1, accum=1)[0][0][0]
    np.testing.assert_array_equal(np.array(c(x)), np.array(a(x)))

    with pytest.raises(KeyError, match="missing.*lm_head.weight"):
        mb.import_weights(b, {k: v for k, v in wa.items() if k != "lm_head.weight"})
    with pytest.raises(KeyError, match="unexpected.*extra"):
        mb.import_weights(b, {**wa, "extra": np.zeros(1, np.float32)})
    with pytest.raises(ValueError, match="resid_lambdas"):
        mb.import_weights(b, {**wa, "resid_lambdas": np.zeros(5, np.float32)})


def test_eval_loss_fn_matches_the_model_in_bounded_chunks(tm, mb, monkeypatch):
    model = tiny_model(tm)
    rng = np.random.default_rng(6)
    rows = rng.integers(0, 64, (5, 17)).astype(np.int32)
    x, y = rows[:, :-1], rows[:, 1:]
    want = np.array(model(mx.array(x), mx.array(y), reduction="none"))
    monkeypatch.setattr(mb, "EVAL_LOGIT_BYTES", 2 * 16 * 64 * 4)  # 2 rows of logits per chunk
    monkeypatch.setattr(mb, "EVAL_LOGIT_BYTES_MAX", 2 * 16 * 64 * 4)
    assert mb.eval_chunk_rows(16, 64, 100) == 2
    got = mb.make_loss_fn(model, 100)(x, y)  # chunks of 2, 2 and a padded 1
    assert got.dtype == np.float32 and got.shape == (5 * 16,)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # the real budget: a 24 GB laptop's eval logits stay near 256 MB however large the eval batch
    monkeypatch.undo()
    assert mb.eval_chunk_rows(2048, 8192, 512) * 2048 * 8192 * 4 <= mb.EVAL_LOGIT_BYTES_MAX


def test_device_detection_says_why(mb):
    dev = mb.detect()
    assert dev.type in ("metal", "cuda", "cpu") and dev.reason
    assert dev.dtype == (mx.float32 if dev.type == "cpu" else mx.bfloat16)
    assert isinstance(mb.device_name(), str) and mb.device_name()
    # The peak, in MiB, is what was held plus a kept 64 MiB array (16 Mi float32), within 1 MiB (MB would be 3+ off).
    mx.synchronize()
    mx.reset_peak_memory()
    before = mx.get_active_memory() / 2**20
    keep = mx.ones((16 * 2**20,), dtype=mx.float32)
    mx.eval(keep)
    assert before + 64 <= mb.peak_memory_mb() < before + 65, (before, mb.peak_memory_mb())
    assert keep.size == 16 * 2**20


def test_cpu_exp_and_tanh_match_float64(mb):
    # The CPU drop-ins for mx.exp / mx.tanh (arithmetic that compiles into vectorised loops), eager and compiled.
    x = np.concatenate([np.linspace(-87, 88, 400_001), np.linspace(-1e-3, 1e-3, 2001)]).astype(np.float32)
    want = np.exp(x.astype(np.float64))
    for f in (mb.exp_cpu, mx.compile(mb.exp_cpu)):
        got = np.array(f(mx.array(x))).astype(np.float64)
        assert np.max(np.abs(got / want - 1)) < 5e-6  # mx.exp: 3.9e-6 (x log2 e rounds at large |x|)
        small = np.abs(x) <= 15
        assert np.max(np.abs(got / want - 1)[small]) < 1e-6
    assert np.isnan(np.array(mb.exp_cpu(mx.array([np.nan])))).all()
    x = np.concatenate([np.linspace(-30, 30, 400_001), np.linspace(-1e-3, 1e-3, 2001)]).astype(np.float32)
    for f in (mb.tanh_cpu, mx.compile(mb.tanh_cpu)):
        got = np.array(f(mx.array(x))).astype(np.float64)
        want = np.tanh(x.astype(np.float64))
        assert np.max(np.abs(got - want)) < 4e-7  # mx.tanh: 1e-7
        tiny = (np.abs(x) < 1e-2) & (x != 0)
        assert np.max(np.abs(got[tiny] / want[tiny] - 1)) < 1e-6  # relative near 0 too
    # drop-ins under autodiff too (MLX has no gradient for their bit casts: each carries its own)
    v = np.linspace(-12, 12, 2001)
    x = mx.array(v.astype(np.float32))
    # tanh' to 2e-6 absolute (measured 2.3e-7), e^x to 2e-6 relative (measured 1.2e-6)
    for f, d, scale in ((mb.tanh_cpu, 1 - np.tanh(v) ** 2, 1.0), (mb.exp_cpu, np.exp(v), np.exp(v))):
        for grad in (mx.grad(lambda a, f=f: f(a).sum()), mx.compile(mx.grad(lambda a, f=f: f(a).sum()))):
            err = np.max(np.abs(np.array(grad(x)) - d) / scale)
            assert err < 2e-6, err


def test_cpu_softmax_and_its_backward_match_float64(mb):
    # The attention softmax on the CPU (exp_cpu inside, hand-written backward), with masked (-inf) scores.
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((3, 5, 64)) * 4).astype(np.float32)
    x[..., 40:] = -np.inf  # a window / causal mask
    g = rng.standard_normal(x.shape).astype(np.float32)
    x64 = x.astype(np.float64)
    p64 = np.exp(x64 - x64.max(-1, keepdims=True))
    p64 /= p64.sum(-1, keepdims=True)
    dx64 = p64 * (g - (g * p64).sum(-1, keepdims=True))
    for f in (mb._softmax_cpu, mx.compile(mb._softmax_cpu)):
        p, vjp = mx.vjp(f, [mx.array(x)], [mx.array(g)])
        assert np.abs(np.array(p[0]) - p64).max() < 1e-6
        assert np.array(p[0])[..., 40:].max() < 1e-30  # masked keys get e^-87 / sum: nothing
        assert np.abs(np.array(vjp[0]) - dx64).max() < 1e-5
    # the dispatcher picks it for float32 on a CPU-only MLX, and mx.softmax elsewhere: same numbers either way
    assert np.abs(np.array(mb.softmax(mx.array(x))) - p64).max() < 1e-6


def test_gradient_accumulation_memory_is_bounded_by_one_micro_batch(tm):
    """Eight micro-batches must not hold eight micro-batches' activations at once (one lazy graph over the whole
    step did: 5x the peak of one micro-batch here, and out of memory on an H100 at the h100 profile)."""
    cfg = tm.GPTConfig(sequence_len=128, vocab_size=256, n_layer=1, n_head=1, n_kv_head=1, n_embd=64)

    def peak(n: int) -> float:
        model = tm.GPT(cfg)
        model.init_weights()
        opt = tm.setup_optimizer(model, 0.004, 0.6, 0.04, 0.2, (0.8, 0.95), 0.5)
        step = tm.make_train_step(model, opt, compiled=True)
        x = mx.array(np.random.default_rng(0).integers(0, 256, (n, 8, 128)).astype(np.int32))
        mx.eval(step(x, x), model.parameters(), opt.state)  # compile outside the measurement
        mx.reset_peak_memory()
        mx.eval(step(x, x), model.parameters(), opt.state)
        return mx.get_peak_memory()

    assert peak(8) < 1.5 * peak(1)
