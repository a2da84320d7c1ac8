"""autoresearch's fixed, backend-agnostic harness.

Everything both training backends share lives here: data preparation, the tokenizer, token shards, the packing
loader, the val set, the val_bpb evaluator, profiles and the summary block. Nothing in this package imports torch
or mlx at module top, so a val_bpb from MLX and one from PyTorch are measured by exactly the same code.
"""
