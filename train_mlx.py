"""Pretrain a small GPT in MLX for a fixed time budget and report val_bpb: the twin of train_torch.py.

    python train_mlx.py                      # one experiment: the active profile ($AUTORESEARCH_PROFILE), prepared data
    autoresearch train --backend mlx         # the same through the harness (Metal, then CUDA, then CPU)

AGENT-EDITABLE. Twin of train_torch.py (docs/twins.md): same sections, names, model and optimizer math; `diff` shows
framework differences only. Metal and CUDA: bf16 compute over float32 master weights (layers cast them at use: MLX
has no autocast). CPU: float32. Everywhere the micro-step (forward + backward) and the optimizer update are each
one mx.compile graph; attention is MLX's fused kernel with a boolean window mask on GPUs, and on the CPU the same math
with the backend's vectorised softmax. The step count is fixed from a calibrated step time (see "Time accounting"),
so reruns agree. Importing it has no side effects: tests and `autoresearch parity`
build from it.
"""

# ruff: noqa: E402  (T_START is taken before the heavy imports)
import time

T_START = time.time()  # before the heavy imports, so startup_seconds counts them

import math
from dataclasses import asdict, dataclass
from functools import partial

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten, tree_map, tree_map_with_path

from common.profiles import current_profile
from common.protocol import Run

# isort: split
from backends import mlx_backend as mb
from backends import mlx_kernels as K  # fast kernels, each with its plain reference (fused=False)

T_IMPORTED = time.time()  # startup_seconds = imports + device + data + model

# ---------------------------------------------------------------------------------------------------------------
# GPT model
# ---------------------------------------------------------------------------------------------------------------

NORM_EPS = 1.1920928955078125e-07  # float32 epsilon: torch's F.rms_norm default, explicit so bf16 keeps it
SOFTCAP = 15  # logits = SOFTCAP * tanh(logits / SOFTCAP)
VE_GATE_CHANNELS = 32  # the value-embedding gate reads this many channels of x
COMPUTE_DTYPE = mb.COMPUTE_DTYPE  # bfloat16 on GPUs (Metal, CUDA), float32 on CPU; master weights float32


@dataclass
class GPTConfig:
    sequence_len: int = 2048
    vocab_size: int = 8192
    n_layer: int = 8
    n_head: int = 4
    n_kv_head: int = 4
    n_embd: int = 512
    window_pattern: str = "SSSL"


def norm(x):
    # RMS norm without weight, computed in float32 (MLX's kernel accumulates in it), returned in the input dtype.
    return mx.fast.rms_norm(x, None, NORM_EPS)


def has_ve(layer_idx, n_layer):
    """Value embeddings on alternating layers, the last one included."""
    return layer_idx % 2 == (n_layer - 1) % 2


class Linear(nn.Linear):
    """nn.Linear whose float32 master weights are cast to the input's dtype at use (MLX has no autocast)."""

    def __call__(self, x):
        y = x @ self.weight.astype(x.dtype).T
        return y + self.bias.astype(x.dtype) if "bias" in self else y


class CausalSelfAttention(nn.Module):
    def __init__(self, config, layer_idx):
        super().__init__()
        self.n_head = config.n_head
        self.n_kv_head = config.n_kv_head
        self.head_dim = config.n_embd // config.n_head
        self.c_q = Linear(config.n_embd, self.n_head * self.head_dim, bias=False)
        self.c_k = Linear(config.n_embd, self.n_kv_head * self.head_dim, bias=False)
        self.c_v = Linear(config.n_embd, self.n_kv_head * self.head_dim, bias=False)
        self.c_proj = Linear(config.n_embd, config.n_embd, bias=False)
        self.ve_gate = (
            Linear(VE_GATE_CHANNELS, self.n_kv_head, bias=False)
            if has_ve(layer_idx, config.n_layer)
            else None
        )

    def __call__(self, x, ve, cos, sin, window):
        B, T, _ = x.shape
        q = self.c_q(x).reshape(B, T, self.n_head, self.head_dim)
        k = self.c_k(x).reshape(B, T, self.n_kv_head, self.head_dim)
        v = self.c_v(x).reshape(B, T, self.n_kv_head, self.head_dim)
        if ve is not None:
            # Value embeddings mixed in by a learned per-head gate in (0, 2), zero-initialised to 1.
            gate = 2 * mx.sigmoid(self.ve_gate(x[..., :VE_GATE_CHANNELS]))
            v = v + gate[..., None] * ve.reshape(B, T, self.n_kv_head, self.head_dim)
        q = norm(K.rotary(q, cos, sin))
        k = norm(K.rotary(k, cos, sin))
        q, k, v = (t.transpose(0, 2, 1, 3) for t in (q, k, v))  # (B, H, T, D) for attention
        y = K.attention(q, k, v, window)
        return self.c_proj(y.transpose(0, 2, 1, 3).reshape(B, T, -1))


class MLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.c_fc = Linear(config.n_embd, 4 * config.n_embd, bias=False)
        self.c_proj = Linear(4 * config.n_embd, config.n_embd, bias=False)

    def __call__(self, x):
        return self.c_proj(K.relu_squared(self.c_fc(x)))


class Block(nn.Module):
    def __init__(self, config, layer_idx):
        super().__init__()
        self.attn = CausalSelfAttention(config, layer_idx)
        self.mlp = MLP(config)

    def __call__(self, x, ve, cos, sin, window):
        x = x + self.attn(norm(x), ve, cos, sin, window)
        return x + self.mlp(norm(x))


class GPT(nn.Module):
    def __init__(self, config, compute_dtype=None, window_sizes=None):
        """compute_dtype: the activations' dtype (default COMPUTE_DTYPE: bf16 on GPUs, float32 on CPUs);
        window_sizes: each layer's attention window (default from config.window_pattern)."""
        super().__init__()
        self.config = config
        self._compute_dtype = compute_dtype or COMPUTE_DTYPE  # a leading underscore: not a parameter
        self._window_sizes = list(window_sizes or self._compute_window_sizes(config))
        # A bare Module as the container gives attribute access and the canonical names (transformer.h.0.mlp...).
        self.transformer = nn.Module()
        self.transformer.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.transformer.h = [Block(config, i) for i in range(config.n_layer)]
        self.lm_head = Linear(config.n_embd, config.vocab_size, bias=False)
        self.resid_lambdas = mx.ones((config.n_layer,))
        self.x0_lambdas = mx.zeros((config.n_layer,))
        head_dim = config.n_embd // config.n_head
        kv_dim = config.n_kv_head * head_dim
        self.value_embeds = {
            str(i): nn.Embedding(config.vocab_size, kv_dim)
            for i in range(config.n_layer)
            if has_ve(i, config.n_layer)
        }
        # Rotary tables: float32, not trainable (a leading underscore keeps them out of parameters()).
        self._cos, self._sin = self._rotary_tables(config.sequence_len, head_dim)
        K.prepare_attention(config.sequence_len, self._window_sizes)  # masks built now, outside any compiled graph

    @staticmethod
    def _rotary_tables(seq_len, head_dim, base=10000.0):
        inv_freq = 1.0 / base ** (mx.arange(0, head_dim, 2, dtype=mx.float32) / head_dim)
        freqs = mx.outer(mx.arange(seq_len, dtype=mx.float32), inv_freq)
        return mx.cos(freqs), mx.sin(freqs)

    @staticmethod
    def _compute_window_sizes(config):
        pattern = config.window_pattern.upper()
        assert pattern and all(c in "SL" for c in pattern), f"window pattern {pattern!r}: use only S and L"
        long_window, short_window = config.sequence_len, config.sequence_len // 2
        sizes = [
            long_window if pattern[i % len(pattern)] == "L" else short_window for i in range(config.n_layer)
        ]
        sizes[-1] = long_window  # the last layer always sees the whole context
        return sizes

    def init_weights(self):
        s = 3**0.5 * self.config.n_embd**-0.5  # uniform with the std of N(0, 1/n_embd)
        uniform = lambda a: mx.random.uniform(-s, s, a.shape)
        self.transformer.wte.weight = mx.random.normal(self.transformer.wte.weight.shape)
        self.lm_head.weight = 0.001 * mx.random.normal(self.lm_head.weight.shape)
        for block in self.transformer.h:
            for lin in (block.attn.c_q, block.attn.c_k, block.attn.c_v, block.mlp.c_fc):
                lin.weight = uniform(lin.weight)
            # Zero output projections: every block starts as the identity.
            block.attn.c_proj.weight = mx.zeros_like(block.attn.c_proj.weight)
            block.mlp.c_proj.weight = mx.zeros_like(block.mlp.c_proj.weight)
            if block.attn.ve_gate is not None:
                block.attn.ve_gate.weight = mx.zeros_like(block.attn.ve_gate.weight)
        self.resid_lambdas = mx.ones((self.config.n_layer,))
        self.x0_lambdas = mx.full((self.config.n_layer,), 0.1)
        for ve in self.value_embeds.values():
            ve.weight = uniform(ve.weight)

    def num_params(self):
        return sum(p.size for _, p in tree_flatten(self.parameters()))

    def estimate_flops(self):
        """Training FLOPs per token (upstream's count): 6 per matmul weight, plus attention's score and value
        products over min(window, T) keys."""
        excluded = self.transformer.wte.weight.size + self.resid_lambdas.size + self.x0_lambdas.size
        excluded += sum(ve.weight.size for ve in self.value_embeds.values())
        h, q, t = self.config.n_head, self.config.n_embd // self.config.n_head, self.config.sequence_len
        attn = sum(12 * h * q * min(w, t) for w in self._window_sizes)
        return 6 * (self.num_params() - excluded) + attn

    def __call__(self, idx, targets=None, reduction="mean"):
        T = idx.shape[1]
        # (1, T, 1, head_dim/2): broadcasts over (B, T, H, head_dim/2)
        cos = self._cos[None, :T, None, :].astype(self._compute_dtype)
        sin = self._sin[None, :T, None, :].astype(self._compute_dtype)
        x = norm(self.transformer.wte(idx).astype(self._compute_dtype))
        x0 = x
        # Cast the lambdas too: MLX promotes a float32 array times a bf16 one, residual stream and all, to float32.
        resid_lambdas, x0_lambdas = self.resid_lambdas.astype(x.dtype), self.x0_lambdas.astype(x.dtype)
        for i, block in enumerate(self.transformer.h):
            x = resid_lambdas[i] * x + x0_lambdas[i] * x0
            ve = self.value_embeds[str(i)](idx).astype(x.dtype) if str(i) in self.value_embeds else None
            x = block(x, ve, cos, sin, self._window_sizes[i])
        x = norm(x)
        logits = self.lm_head(x).astype(mx.float32)
        if targets is None:
            return K.softcap(logits, SOFTCAP)
        loss = K.softcap_cross_entropy(logits, targets, SOFTCAP)
        return loss.reshape(-1) if reduction == "none" else loss.mean()


# ---------------------------------------------------------------------------------------------------------------
# Optimizer (Muon + AdamW)
# ---------------------------------------------------------------------------------------------------------------

# Polar Express (Amsel et al. 2025): per-step (a, b, c) of X <- a X + b (X X^T) X + c (X X^T)^2 X, tuned for 5 steps.
POLAR_EXPRESS_COEFFS = [
    (8.156554524902461, -22.48329292557795, 15.878769915207462),
    (4.042929935166739, -2.808917465908714, 0.5000178451051316),
    (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
    (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
    (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
]


def polar_express(G, steps=5):
    """Approximately orthogonalise each matrix of a stack (K, R, C): U V^T of its SVD. Always in float32 (bf16
    iterations gave NaNs in a community MLX port)."""
    X = G.astype(mx.float32)
    # Frobenius norm summed in two stages (rows, then columns): one float32 sum over all R*C elements is off by
    # ~4e-6 on this CPU, and Polar Express amplifies that into a 2e-5 disagreement with the torch twin.
    X = X / (mx.sqrt(mx.sum(mx.sum(X * X, axis=-1, keepdims=True), axis=-2, keepdims=True)) * 1.02 + 1e-6)
    tall = X.shape[-2] > X.shape[-1]  # iterate on the smaller Gram matrix
    for a, b, c in POLAR_EXPRESS_COEFFS[:steps]:
        if tall:
            A = X.swapaxes(-1, -2) @ X
            X = a * X + X @ (b * A + c * (A @ A))
        else:
            A = X @ X.swapaxes(-1, -2)
            X = a * X + (b * A + c * (A @ A)) @ X
    return X


def muon_step(params, grads, momentum_buffer, second_momentum_buffer, momentum, lr, wd, beta2, ns_steps):
    """One Muon step on a stack of same-shape matrices (K, R, C), returned as (params, momentum_buffer,
    second_momentum_buffer); the second moment is (K, R, 1) if R >= C else (K, 1, C). momentum, lr and wd are
    arrays: a compiled step never retraces for them."""
    R, C = params.shape[-2:]
    # Nesterov momentum
    momentum_buffer = momentum_buffer + (1 - momentum) * (grads - momentum_buffer)
    g = grads + momentum * (momentum_buffer - grads)
    X = polar_express(g, ns_steps)
    # NorMuon: normalise per row (or column) by a running second moment, then restore the update's overall norm
    red = -1 if R >= C else -2
    n = X.shape[red]
    v_mean = mx.mean(X * X, axis=red, keepdims=True)
    v_norm = mx.sqrt(mx.sum(v_mean, axis=(-2, -1), keepdims=True) * n)
    second_momentum_buffer = second_momentum_buffer + (1 - beta2) * (v_mean - second_momentum_buffer)
    step = mx.rsqrt(mx.maximum(second_momentum_buffer, 1e-10))
    v_norm_new = mx.sqrt(mx.sum(v_mean * n * step * step, axis=(-2, -1), keepdims=True))
    X = X * step * (v_norm / mx.maximum(v_norm_new, 1e-10))
    # Cautious weight decay (only where update and weight agree in sign), lr scaled up for tall matrices
    lr = lr * max(1.0, R / C) ** 0.5
    mask = (X * params) >= 0
    params = params - lr * X - lr * wd * params * mask
    return params, momentum_buffer, second_momentum_buffer


def adamw_step(p, g, m, v, step, lr, beta1, beta2, eps, wd):
    """One AdamW step (bias-corrected, decoupled weight decay), returned as (p, m, v); step and lr are arrays."""
    p = p * (1 - lr * wd)
    m = m + (1 - beta1) * (g - m)
    v = v + (1 - beta2) * (g * g - v)
    bias1 = 1 - beta1**step
    bias2 = 1 - beta2**step
    p = p - (lr / bias1) * m / (mx.sqrt(v / bias2) + eps)
    return p, m, v


class MuonAdamW:
    """Muon for the blocks' matrices (one stacked group per shape), AdamW for the rest.

    Groups name their parameters (canonical names). The per-step values (lr multiplier, Muon momentum and weight
    decay, the step count) live in `self.state` as arrays, beside the moment buffers: the compiled step takes and
    returns that state, so it reads fresh values on every call, never Python floats frozen at trace time."""

    def __init__(self, model, param_groups):
        self.param_groups = param_groups
        params = dict(tree_flatten(model.parameters()))
        self.state = {
            "step": mx.array(0.0),
            "lr_multiplier": mx.array(1.0),
            "muon_momentum": mx.array(0.95),
            "muon_weight_decay": mx.array(0.0),
            "adamw": {},
            "muon": [],
        }
        for group in param_groups:
            if group["kind"] == "adamw":
                for name in group["names"]:
                    p = params[name]
                    self.state["adamw"][name] = {"m": mx.zeros_like(p), "v": mx.zeros_like(p)}
            else:
                p = params[group["names"][0]]
                (R, C), K = p.shape, len(group["names"])
                self.state["muon"].append(
                    {
                        "momentum_buffer": mx.zeros((K, R, C)),
                        "second_momentum_buffer": mx.zeros((K, R, 1) if R >= C else (K, 1, C)),
                    }
                )

    def set_schedule(self, lr_multiplier, muon_momentum, muon_weight_decay):
        self.state["lr_multiplier"] = mx.array(lr_multiplier, dtype=mx.float32)
        self.state["muon_momentum"] = mx.array(muon_momentum, dtype=mx.float32)
        self.state["muon_weight_decay"] = mx.array(muon_weight_decay, dtype=mx.float32)

    def update(self, model, grads):
        """Apply one update from grads ({canonical name: float32 array}); writes the new weights into the model."""
        s = self.state
        params = dict(tree_flatten(model.parameters()))
        s["step"] = s["step"] + 1
        new = {}
        muon_index = 0
        for group in self.param_groups:
            lr = group["lr"] * s["lr_multiplier"]
            names = group["names"]
            if group["kind"] == "adamw":
                beta1, beta2 = group["betas"]
                for name in names:
                    st = s["adamw"][name]
                    new[name], st["m"], st["v"] = adamw_step(
                        params[name], grads[name], st["m"], st["v"], s["step"], lr, beta1, beta2, group["eps"],
                        group["weight_decay"],
                    )  # fmt: skip
            else:
                st = s["muon"][muon_index]
                muon_index += 1
                stacked, st["momentum_buffer"], st["second_momentum_buffer"] = muon_step(
                    mx.stack([params[n] for n in names]), mx.stack([grads[n] for n in names]),
                    st["momentum_buffer"], st["second_momentum_buffer"], s["muon_momentum"], lr,
                    s["muon_weight_decay"], group["beta2"], group["ns_steps"],
                )  # fmt: skip
                new.update((n, stacked[k]) for k, n in enumerate(names))
        # Rebuild the parameter tree by path (tree_unflatten would turn value_embeds' "1" key into a list index).
        model.update(tree_map_with_path(lambda name, p: new[name], model.parameters()))

    def reset(self):
        """Back to a fresh optimizer: zeros for every state array, in the same `self.state` dict, which the compiled
        step holds as its inputs and outputs (a new dict would leave it reading and updating the old one)."""
        for st in [*self.state["adamw"].values(), *self.state["muon"]]:
            for k in st:
                st[k] = mx.zeros_like(st[k])
        self.state["step"] = mx.array(0.0)


# ---------------------------------------------------------------------------------------------------------------
# Hyperparameters (edit these directly, no CLI flags)
# ---------------------------------------------------------------------------------------------------------------

# The profile fixes the budget, the context length, the val set and the seed (common/protocol.py runs them); it
# also gives this tier's starting point for the batch and the model size below, which are ours to change.
PROFILE = current_profile()  # $AUTORESEARCH_PROFILE, set by the harness
MAX_SEQ_LEN = PROFILE.max_seq_len  # context length T (fixed by the profile)

# Model architecture
ASPECT_RATIO = 64  # model_dim = DEPTH * ASPECT_RATIO, rounded up to a multiple of HEAD_DIM
HEAD_DIM = 128  # attention head dimension
WINDOW_PATTERN = "SSSL"  # per-layer attention window, cycled: L = full context, S = half

# Optimization
TOTAL_BATCH_SIZE = PROFILE.total_batch_size  # tokens per optimizer step
# Rows per micro-batch (accumulation makes up the rest). MLX keeps more activations than the torch twin: at depth 8
# and T 2048, 64 rows peak at 42 GiB and 32 rows ran 6% slower; 128 rows (74 GiB, +3% on an H200) ran out of
# memory on an 80 GB H100.
DEVICE_BATCH_SIZE = min(PROFILE.device_batch_size, 64)
EMBEDDING_LR = 0.6  # AdamW lr of wte and value_embeds (scaled by 1/sqrt(d/768))
UNEMBEDDING_LR = 0.004  # AdamW lr of lm_head (scaled by 1/sqrt(d/768))
MATRIX_LR = 0.04  # Muon lr of the blocks' matrices
SCALAR_LR = 0.5  # AdamW lr of x0_lambdas (resid_lambdas get 1/100 of it)
WEIGHT_DECAY = 0.2  # Muon's cautious weight decay, decayed linearly to 0
ADAM_BETAS = (0.8, 0.95)  # AdamW betas
WARMUP_RATIO = 0.0  # fraction of the run warming the lr up
WARMDOWN_RATIO = 0.5  # fraction of the run decaying the lr to FINAL_LR_FRAC
FINAL_LR_FRAC = 0.0  # final lr as a fraction of the initial

# Model size
DEPTH = PROFILE.depth  # number of layers: the one size dial

EVAL_BATCH_SIZE = DEVICE_BATCH_SIZE  # val rows per eval batch (the backend splits them to bound memory)
COMPILE = True  # mx.compile the whole training step (micro-batches and optimizer) into one graph


def get_lr_multiplier(progress):
    if progress < WARMUP_RATIO:
        return progress / WARMUP_RATIO if WARMUP_RATIO > 0 else 1.0
    if progress < 1.0 - WARMDOWN_RATIO:
        return 1.0
    cooldown = (1.0 - progress) / WARMDOWN_RATIO
    return cooldown * 1.0 + (1 - cooldown) * FINAL_LR_FRAC


def get_muon_momentum(step):
    frac = min(step / 300, 1)
    return (1 - frac) * 0.85 + frac * 0.95


def get_weight_decay(progress):
    return WEIGHT_DECAY * (1 - progress)


def setup_optimizer(model, unembedding_lr, embedding_lr, matrix_lr, weight_decay, adam_betas, scalar_lr):
    """Upstream's groups: AdamW for lm_head, wte, value_embeds and the scalars (lrs scaled by 1/sqrt(d/768)), Muon
    for every 2-D matrix in the blocks, one group per shape."""
    scale = (model.config.n_embd / 768) ** -0.5
    params = dict(tree_flatten(model.parameters()))
    matrices = [k for k, p in params.items() if k.startswith("transformer.h.") and p.ndim == 2]
    value_embeds = [k for k in params if k.startswith("value_embeds.")]

    def adamw(names, lr, betas=adam_betas):
        return dict(kind="adamw", names=names, lr=lr, betas=betas, eps=1e-10, weight_decay=0.0)

    def muon(names):
        hp = dict(lr=matrix_lr, momentum=0.95, ns_steps=5, beta2=0.95, weight_decay=weight_decay)
        return dict(kind="muon", names=names, **hp)

    groups = [
        adamw(["lm_head.weight"], unembedding_lr * scale),
        adamw(["transformer.wte.weight"], embedding_lr * scale),
        adamw(value_embeds, embedding_lr * scale),
        adamw(["resid_lambdas"], scalar_lr * 0.01),
        adamw(["x0_lambdas"], scalar_lr, betas=(0.96, 0.95)),
    ]
    for shape in sorted({params[k].shape for k in matrices}):  # Muon stacks same-shape matrices
        groups.append(muon([k for k in matrices if params[k].shape == shape]))
    groups = [g for g in groups if g["names"]]
    grouped = [n for g in groups for n in g["names"]]
    assert sorted(grouped) == sorted(params), "every parameter must be in exactly one optimizer group"
    return MuonAdamW(model, groups)


def make_train_step(model, optimizer, compiled=True):
    """step(x, y) -> mean loss: gradients over the micro-batches x[i], y[i] (x, y: (accum, B, T) arrays), averaged,
    then one optimizer update. Compiled, the micro-step (forward + backward) and the update are each one graph over
    the model, optimizer and RNG state (mlx-examples style). The gradients are evaluated after every micro-batch but
    the last: one lazy graph over all micro-batches would hold all their activations at once (it ran out of memory
    on an 80 GB H100 at the h100 profile's 16 x 32 x 2048 tokens). The caller's mx.eval ends the step."""
    loss_and_grad = nn.value_and_grad(model, lambda x, y: model(x, y))

    def update(grads):
        optimizer.update(model, grads)

    if compiled:
        # The model is an output of the micro-step too: value_and_grad swaps its parameters for traced ones.
        micro_state = [model.state, mx.random.state]
        loss_and_grad = partial(mx.compile, inputs=micro_state, outputs=micro_state)(loss_and_grad)
        state = [model.state, optimizer.state]
        update = partial(mx.compile, inputs=state, outputs=state)(update)

    def step(x, y):
        n = x.shape[0]
        loss, grads = loss_and_grad(x[0], y[0])
        for i in range(1, n):
            mx.eval(loss, grads)  # bound memory to one micro-batch's activations
            loss_i, grads_i = loss_and_grad(x[i], y[i])
            loss, grads = loss + loss_i, tree_map(mx.add, grads, grads_i)
        if n > 1:
            loss, grads = loss / n, tree_map(lambda g: g / n, grads)
        update(dict(tree_flatten(grads)))
        return loss

    return step


def build_config(depth, seq_len, vocab_size):
    """The model for a depth: width DEPTH * ASPECT_RATIO rounded up to whole heads (the one size formula)."""
    model_dim = math.ceil(depth * ASPECT_RATIO / HEAD_DIM) * HEAD_DIM
    n_head = model_dim // HEAD_DIM
    return GPTConfig(
        sequence_len=seq_len, vocab_size=vocab_size, n_layer=depth, n_head=n_head, n_kv_head=n_head,
        n_embd=model_dim, window_pattern=WINDOW_PATTERN,
    )  # fmt: skip


def main():
    mb.setup()  # prints the device and why
    run = Run(T_START, T_IMPORTED, mb, "mlx")  # profile, seed, data and val rows: the harness's, not ours
    mx.random.seed(run.seed)
    config = build_config(DEPTH, run.seq_len, run.vocab_size)
    model = GPT(config)
    model.init_weights()
    mx.eval(model.parameters())
    optimizer = setup_optimizer(
        model, unembedding_lr=UNEMBEDDING_LR, embedding_lr=EMBEDDING_LR, matrix_lr=MATRIX_LR,
        weight_decay=WEIGHT_DECAY, adam_betas=ADAM_BETAS, scalar_lr=SCALAR_LR,
    )  # fmt: skip
    train_step = make_train_step(model, optimizer, compiled=COMPILE)
    state = [model.state, optimizer.state]  # what each step's mx.eval computes
    initial = [model.parameters()]  # a copy: steps replace the model's arrays, never change them (immutable)

    def step(x, y, i, progress):
        optimizer.set_schedule(get_lr_multiplier(progress), get_muon_momentum(i), get_weight_decay(progress))
        loss = train_step(x, y)
        mx.eval(loss, state)  # the one sync point per step
        return loss

    def reset():  # after the throwaway compile and calibration steps
        model.update(initial.pop())
        optimizer.reset()

    run.train(
        step, reset, device_batch_size=DEVICE_BATCH_SIZE, total_batch_size=TOTAL_BATCH_SIZE,
        num_params=model.num_params(), flops_per_token=model.estimate_flops(), depth=DEPTH, model_text=str(asdict(config)),
    )  # fmt: skip
    run.finish(mb.make_loss_fn(model, EVAL_BATCH_SIZE), EVAL_BATCH_SIZE)


if __name__ == "__main__":
    main()
