"""Pretrain a small GPT in PyTorch for a fixed time budget and report val_bpb: the twin of train_mlx.py.

    python train_torch.py                    # one experiment: the active profile ($AUTORESEARCH_PROFILE), prepared data
    autoresearch train --backend cuda        # the same through the harness (or --backend mps, cpu)

AGENT-EDITABLE. Twin of train_mlx.py (docs/twins.md): same sections, names, model and optimizer math; `diff` shows
framework differences only. CUDA: bf16 autocast over float32 master weights, torch.compile of the model and of the
optimizer steps, FlexAttention for sliding windows and cuDNN SDPA for full-causal layers. MPS and CPU: float32,
eager, SDPA with a boolean window mask. The step count is fixed from a calibrated step time (see "Time accounting"),
so reruns agree. Importing it has no side effects: tests and `autoresearch parity` build from it.
"""

# ruff: noqa: E402  (T_START is taken before the heavy imports)
import time

T_START = time.time()  # before the heavy imports, so startup_seconds counts them

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from common.profiles import current_profile
from common.protocol import Run

# isort: split
from backends import torch_backend as tb
from backends import torch_kernels as K  # fast kernels, each with its plain reference (fused=False)

T_IMPORTED = time.time()  # startup_seconds = imports + device + data + model

# ---------------------------------------------------------------------------------------------------------------
# GPT model
# ---------------------------------------------------------------------------------------------------------------

NORM_EPS = 1.1920928955078125e-07  # float32 epsilon: torch's F.rms_norm default, explicit so bf16 keeps it
SOFTCAP = 15  # logits = SOFTCAP * tanh(logits / SOFTCAP)
VE_GATE_CHANNELS = 32  # the value-embedding gate reads this many channels of x
COMPUTE_DTYPE = tb.COMPUTE_DTYPE  # bfloat16 on CUDA (autocast), float32 elsewhere; master weights float32


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
    # RMS norm without weight, computed in float32, returned in the input dtype.
    return F.rms_norm(x.float(), (x.size(-1),), eps=NORM_EPS).to(x.dtype)


def has_ve(layer_idx, n_layer):
    """Value embeddings on alternating layers, the last one included."""
    return layer_idx % 2 == (n_layer - 1) % 2


class CausalSelfAttention(nn.Module):
    def __init__(self, config, layer_idx):
        super().__init__()
        self.n_head = config.n_head
        self.n_kv_head = config.n_kv_head
        self.head_dim = config.n_embd // config.n_head
        self.c_q = nn.Linear(config.n_embd, self.n_head * self.head_dim, bias=False)
        self.c_k = nn.Linear(config.n_embd, self.n_kv_head * self.head_dim, bias=False)
        self.c_v = nn.Linear(config.n_embd, self.n_kv_head * self.head_dim, bias=False)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=False)
        self.ve_gate = (
            nn.Linear(VE_GATE_CHANNELS, self.n_kv_head, bias=False)
            if has_ve(layer_idx, config.n_layer)
            else None
        )

    def forward(self, x, ve, cos, sin, window):
        B, T, _ = x.shape
        q = self.c_q(x).view(B, T, self.n_head, self.head_dim)
        k = self.c_k(x).view(B, T, self.n_kv_head, self.head_dim)
        v = self.c_v(x).view(B, T, self.n_kv_head, self.head_dim)
        if ve is not None:
            # Value embeddings mixed in by a learned per-head gate in (0, 2), zero-initialised to 1.
            gate = 2 * torch.sigmoid(self.ve_gate(x[..., :VE_GATE_CHANNELS]))
            v = v + gate[..., None] * ve.view(B, T, self.n_kv_head, self.head_dim)
        q = norm(K.rotary(q, cos, sin))
        k = norm(K.rotary(k, cos, sin))
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, H, T, D) for attention
        y = K.attention(q, k, v, window)
        return self.c_proj(y.transpose(1, 2).reshape(B, T, -1))


class MLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=False)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=False)

    def forward(self, x):
        return self.c_proj(K.relu_squared(self.c_fc(x)))


class Block(nn.Module):
    def __init__(self, config, layer_idx):
        super().__init__()
        self.attn = CausalSelfAttention(config, layer_idx)
        self.mlp = MLP(config)

    def forward(self, x, ve, cos, sin, window):
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
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.vocab_size, config.n_embd),
                h=nn.ModuleList([Block(config, i) for i in range(config.n_layer)]),
            )
        )
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.resid_lambdas = nn.Parameter(torch.ones(config.n_layer))
        self.x0_lambdas = nn.Parameter(torch.zeros(config.n_layer))
        head_dim = config.n_embd // config.n_head
        kv_dim = config.n_kv_head * head_dim
        self.value_embeds = nn.ModuleDict(
            {
                str(i): nn.Embedding(config.vocab_size, kv_dim)
                for i in range(config.n_layer)
                if has_ve(i, config.n_layer)
            }
        )
        # Rotary tables: float32, not trainable, not saved (non-persistent buffers follow .to(device)).
        cos, sin = self._rotary_tables(config.sequence_len, head_dim)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    @staticmethod
    def _rotary_tables(seq_len, head_dim, base=10000.0, device=None):
        inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device=device) / head_dim)
        freqs = torch.outer(torch.arange(seq_len, dtype=torch.float32, device=device), inv_freq)
        return freqs.cos(), freqs.sin()

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

    @torch.no_grad()
    def init_weights(self):
        s = 3**0.5 * self.config.n_embd**-0.5  # uniform with the std of N(0, 1/n_embd)
        nn.init.normal_(self.transformer.wte.weight, mean=0.0, std=1.0)
        nn.init.normal_(self.lm_head.weight, mean=0.0, std=0.001)
        for block in self.transformer.h:
            for lin in (block.attn.c_q, block.attn.c_k, block.attn.c_v, block.mlp.c_fc):
                nn.init.uniform_(lin.weight, -s, s)
            nn.init.zeros_(block.attn.c_proj.weight)  # every block starts as the identity
            nn.init.zeros_(block.mlp.c_proj.weight)
            if block.attn.ve_gate is not None:
                nn.init.zeros_(block.attn.ve_gate.weight)
        self.resid_lambdas.fill_(1.0)
        self.x0_lambdas.fill_(0.1)
        for ve in self.value_embeds.values():
            nn.init.uniform_(ve.weight, -s, s)
        cos, sin = self._rotary_tables(
            self.config.sequence_len, self.config.n_embd // self.config.n_head, device=self.cos.device
        )
        self.cos.copy_(cos)
        self.sin.copy_(sin)

    def num_params(self):
        return sum(p.numel() for p in self.parameters())

    def estimate_flops(self):
        """Training FLOPs per token (upstream's count): 6 per matmul weight, plus attention's score and value
        products over min(window, T) keys."""
        excluded = self.transformer.wte.weight.numel() + self.resid_lambdas.numel() + self.x0_lambdas.numel()
        excluded += sum(ve.weight.numel() for ve in self.value_embeds.values())
        h, q, t = self.config.n_head, self.config.n_embd // self.config.n_head, self.config.sequence_len
        attn = sum(12 * h * q * min(w, t) for w in self._window_sizes)
        return 6 * (self.num_params() - excluded) + attn

    def forward(self, idx, targets=None, reduction="mean"):
        T = idx.shape[1]
        # (1, T, 1, head_dim/2): broadcasts over (B, T, H, head_dim/2)
        cos = self.cos[None, :T, None, :].to(self._compute_dtype)
        sin = self.sin[None, :T, None, :].to(self._compute_dtype)
        x = norm(self.transformer.wte(idx).to(self._compute_dtype))
        x0 = x
        # The 0-d float32 lambdas times a bf16 x stay bf16 (torch promotes 0-d operands like Python scalars).
        for i, block in enumerate(self.transformer.h):
            x = self.resid_lambdas[i] * x + self.x0_lambdas[i] * x0
            ve = self.value_embeds[str(i)](idx).to(x.dtype) if str(i) in self.value_embeds else None
            x = block(x, ve, cos, sin, self._window_sizes[i])
        x = norm(x)
        logits = self.lm_head(x)
        if targets is None:
            return K.softcap(logits, SOFTCAP)
        loss = K.softcap_cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), SOFTCAP)
        return loss if reduction == "none" else loss.mean()


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


def polar_express(G, steps=5, dtype=torch.float32):
    """Approximately orthogonalise each matrix of a stack (K, R, C): U V^T of its SVD. In `dtype`: bfloat16 on CUDA
    (upstream's choice, tested finite), float32 elsewhere."""
    X = G.to(dtype)
    X = X / (X.norm(dim=(-2, -1), keepdim=True) * 1.02 + 1e-6)
    tall = X.size(-2) > X.size(-1)  # iterate on the smaller Gram matrix
    for a, b, c in POLAR_EXPRESS_COEFFS[:steps]:
        if tall:
            A = X.mT @ X
            X = a * X + X @ (b * A + c * (A @ A))
        else:
            A = X @ X.mT
            X = a * X + (b * A + c * (A @ A)) @ X
    return X


def muon_step(
    params, grads, momentum_buffer, second_momentum_buffer, momentum, lr, wd, beta2, ns_steps, polar_dtype
):
    """One Muon step, in place, on a stack of same-shape matrices (K, R, C); the second moment is (K, R, 1) if
    R >= C else (K, 1, C). momentum, lr, wd, beta2 are 0-d tensors: a compiled step never recompiles for them."""
    R, C = params.shape[-2:]
    # Nesterov momentum
    momentum_buffer.lerp_(grads, 1 - momentum)
    g = grads.lerp(momentum_buffer, momentum)
    X = polar_express(g, ns_steps, polar_dtype).float()
    # NorMuon: normalise per row (or column) by a running second moment, then restore the update's overall norm
    red = -1 if R >= C else -2
    n = X.size(red)
    v_mean = X.square().mean(dim=red, keepdim=True)
    v_norm = (v_mean.sum(dim=(-2, -1), keepdim=True) * n).sqrt()
    second_momentum_buffer.lerp_(v_mean, 1 - beta2)
    step = second_momentum_buffer.clamp_min(1e-10).rsqrt()
    v_norm_new = (v_mean * n * step * step).sum(dim=(-2, -1), keepdim=True).sqrt()
    X = X * step * (v_norm / v_norm_new.clamp_min(1e-10))
    # Cautious weight decay (only where update and weight agree in sign), lr scaled up for tall matrices
    lr = lr * max(1.0, R / C) ** 0.5
    mask = (X * params) >= 0
    params.sub_(lr * X + lr * wd * params * mask)


def adamw_step(p, g, m, v, step, lr, beta1, beta2, eps, wd):
    """One AdamW step, in place (bias-corrected, decoupled weight decay); hyperparameters are 0-d tensors."""
    p.mul_(1 - lr * wd)
    m.lerp_(g, 1 - beta1)
    v.lerp_(g * g, 1 - beta2)
    bias1 = 1 - beta1**step
    bias2 = 1 - beta2**step
    p.sub_((lr / bias1) * m / ((v / bias2).sqrt() + eps))


class MuonAdamW:
    """Muon for the blocks' matrices (one stacked group per shape), AdamW for the rest.

    Groups name their parameters (canonical names). The per-step values (lr multiplier, Muon momentum and weight
    decay, the step count) reach the compiled steps as 0-d tensors, never as Python floats frozen at trace time."""

    def __init__(self, model, param_groups):
        dev = tb.detect()
        self.param_groups = param_groups
        self.params = dict(model.named_parameters())
        self.polar_dtype = dev.dtype
        self.schedule = dict(lr_multiplier=1.0, muon_momentum=0.95, muon_weight_decay=0.0)
        self.steps = 0
        # 0-d tensors on the CPU for compiled code (read at launch, no kernel to set them), on the device for eager
        # code (eager ops want their operands on one device).
        where = "cpu" if dev.compile else dev.device
        self._t = {
            k: torch.zeros((), device=where)
            for k in ("step", "lr", "beta1", "beta2", "eps", "wd", "momentum")
        }
        self._muon = torch.compile(muon_step, dynamic=False, fullgraph=True) if dev.compile else muon_step
        self._adamw = torch.compile(adamw_step, dynamic=False, fullgraph=True) if dev.compile else adamw_step
        self.state = {"adamw": {}, "muon": []}
        for group in param_groups:
            if group["kind"] == "adamw":
                for name in group["names"]:
                    p = self.params[name]
                    self.state["adamw"][name] = {"m": torch.zeros_like(p), "v": torch.zeros_like(p)}
            else:
                p = self.params[group["names"][0]]
                (R, C), K = p.shape, len(group["names"])
                self.state["muon"].append(
                    {
                        "momentum_buffer": p.new_zeros(K, R, C),
                        "second_momentum_buffer": p.new_zeros((K, R, 1) if R >= C else (K, 1, C)),
                    }
                )

    def set_schedule(self, lr_multiplier, muon_momentum, muon_weight_decay):
        self.schedule = dict(
            lr_multiplier=lr_multiplier, muon_momentum=muon_momentum, muon_weight_decay=muon_weight_decay
        )

    @torch.no_grad()
    def step(self):
        """Apply one update from the parameters' .grad."""
        t, s = self._t, self.schedule
        self.steps += 1
        t["step"].fill_(self.steps)
        muon_index = 0
        for group in self.param_groups:
            t["lr"].fill_(group["lr"] * s["lr_multiplier"])
            names = group["names"]
            if group["kind"] == "adamw":
                t["beta1"].fill_(group["betas"][0])
                t["beta2"].fill_(group["betas"][1])
                t["eps"].fill_(group["eps"])
                t["wd"].fill_(group["weight_decay"])
                for name in names:
                    p, st = self.params[name], self.state["adamw"][name]
                    self._adamw(
                        p, p.grad, st["m"], st["v"], t["step"], t["lr"], t["beta1"], t["beta2"], t["eps"], t["wd"],
                    )  # fmt: skip
            else:
                st = self.state["muon"][muon_index]
                muon_index += 1
                t["momentum"].fill_(s["muon_momentum"])
                t["wd"].fill_(s["muon_weight_decay"])
                t["beta2"].fill_(group["beta2"])
                params = [self.params[n] for n in names]
                stacked = torch.stack(params)
                self._muon(
                    stacked, torch.stack([p.grad for p in params]), st["momentum_buffer"], st["second_momentum_buffer"],
                    t["momentum"], t["lr"], t["wd"], t["beta2"], group["ns_steps"], self.polar_dtype,
                )  # fmt: skip
                torch._foreach_copy_(params, list(stacked.unbind(0)))

    def zero_grad(self):
        for p in self.params.values():
            p.grad = None

    @torch.no_grad()
    def reset(self):
        """Back to a fresh optimizer: state zeroed in place, so compiled steps keep the very same inputs."""
        for st in [*self.state["adamw"].values(), *self.state["muon"]]:
            for buf in st.values():
                buf.zero_()
        self.steps = 0


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
DEVICE_BATCH_SIZE = PROFILE.device_batch_size  # rows per micro-batch (accumulation makes up the rest)
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

EVAL_BATCH_SIZE = DEVICE_BATCH_SIZE  # val rows per eval batch (the training shape: eval reuses its graph)
COMPILE = True  # torch.compile the model and the optimizer steps (CUDA with Triton only; elsewhere eager)


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
    params = dict(model.named_parameters())
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
    """step(x, y) -> mean loss: gradients over the micro-batches x[i], y[i] (lists of (B, T) device tensors),
    averaged, then one optimizer update. Compiled, the model is one torch.compile graph (FlexAttention windows)
    called for per-token losses with the mean taken outside, so the final eval runs this very graph: it never
    compiles an inference graph. `step.model` is the callable model (compiled or not)."""
    if compiled:
        device = model.lm_head.weight.device
        K.prepare_attention(model.config.sequence_len, model._window_sizes, device, flex=device.type == "cuda")
        run = torch.compile(model, dynamic=False)
    else:
        run = model

    def step(x, y):
        n = len(x)
        total = 0.0
        for i in range(n):
            with tb.autocast(), tb.sdpa_backends():
                loss = run(x[i], y[i], reduction="none").mean()
            (loss / n).backward()
            total = total + loss.detach()
        optimizer.step()
        optimizer.zero_grad()
        return total / n

    step.model = run
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
    dev = tb.detect()
    tb.setup()
    compiled = COMPILE and dev.compile
    mode = dev.compile_reason if compiled or not dev.compile else "eager (COMPILE = False)"
    print(f"backend {dev.type} ({dev.reason}): {tb.device_name()}; {mode}", flush=True)
    run = Run(T_START, T_IMPORTED, tb, dev.type)  # profile, seed, data and val rows: the harness's, not ours
    torch.manual_seed(run.seed)
    config = build_config(DEPTH, run.seq_len, run.vocab_size)
    with torch.device(dev.device):
        model = GPT(config)
    model.init_weights()
    optimizer = setup_optimizer(
        model, unembedding_lr=UNEMBEDDING_LR, embedding_lr=EMBEDDING_LR, matrix_lr=MATRIX_LR,
        weight_decay=WEIGHT_DECAY, adam_betas=ADAM_BETAS, scalar_lr=SCALAR_LR,
    )  # fmt: skip
    train_step = make_train_step(model, optimizer, compiled=compiled)
    initial = [{k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}]  # kept on the host

    def step(x, y, i, progress):
        optimizer.set_schedule(get_lr_multiplier(progress), get_muon_momentum(i), get_weight_decay(progress))
        return train_step(x, y)

    def reset():  # after the throwaway compile and calibration steps
        weights = initial.pop()
        with torch.no_grad():
            for k, v in model.state_dict().items():
                v.copy_(weights[k])
        optimizer.reset()

    run.train(
        step, reset, device_batch_size=DEVICE_BATCH_SIZE, total_batch_size=TOTAL_BATCH_SIZE,
        num_params=model.num_params(), flops_per_token=model.estimate_flops(), depth=DEPTH, model_text=str(asdict(config)),
    )  # fmt: skip
    run.finish(tb.make_loss_fn(train_step.model, max_rows=EVAL_BATCH_SIZE, training_graph=compiled), EVAL_BATCH_SIZE)


if __name__ == "__main__":
    main()
