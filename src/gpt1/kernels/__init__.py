"""Speed only: the one seam between the model and its fast paths.

Each function computes what the plain PyTorch expression in its docstring computes (tests/kernels hold them to it)
and picks, by device, dtype and mode, the implementation that does it fastest: the CPU kernels in `cpu/` where
PyTorch's own are slow, PyTorch's everywhere else. The model calls only these; nothing here imports the model.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F

from gpt1.kernels.cpu import decode_layout
from gpt1.kernels.cpu.attention import causal_attention_dropout
from gpt1.kernels.cpu.dropout import cpu_dropout
from gpt1.kernels.cpu.lm_loss import shifted_lm_loss

__all__ = [
    "attention",
    "cache_dtype",
    "dropout",
    "int8_linear",
    "lm_loss",
    "prepare_decoding",
    "prepare_training",
]


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    bias: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    past: int = 0,
) -> torch.Tensor:
    """Causal attention of (B, H, T, D) queries over (B, H, past + T, D) keys and values: the result of
    `F.scaled_dot_product_attention` with the additive `bias` (B, 1, T, past + T) or, without one, the causal
    mask, and dropout `dropout_p` (0 outside training), in the dtype of `q`.

    Keys and values may be stored in a wider dtype than `q` (a KV cache in `cache_dtype`): attention runs in theirs.
    On a CPU, training with dropout runs the chunked kernel of `cpu/attention.py`; PyTorch's has no fused path there.
    """
    out_dtype = q.dtype
    q = q.to(k.dtype)
    if dropout_p > 0 and q.device.type == "cpu" and past == 0:
        y = causal_attention_dropout(q, k, v, dropout_p, bias)
    else:
        # is_causal aligns the triangle top-left, which is only right when there is no past.
        is_causal = bias is None and past == 0 and q.shape[2] > 1
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout_p, is_causal=is_causal)
    return y.to(out_dtype)


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """`F.dropout(x, p, training)`: on a CPU while training, with the cheaper random source of `cpu/dropout.py`
    (p rounded to a multiple of 2^-16 there)."""
    if not training or p == 0.0 or p >= 1.0 or x.device.type != "cpu":
        return F.dropout(x, p, training)
    return cpu_dropout(x, p)


def lm_loss(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy of the logits `hidden @ weight.T` (labels shifted left by one, -100 ignored),
    without ever holding the (B, T, vocab) logits (`cpu/lm_loss.py`, which runs on any device)."""
    return shifted_lm_loss(hidden, weight, labels)


def int8_linear(
    x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """`F.linear(x, weight.to(x.dtype) * scale[:, None], bias)` for an int8 `weight` (out, in) with one `scale` per
    output channel, in the dtype of `x`.

    On a CPU: PyTorch's int8 weight-only kernel `aten._weight_int8pack_mm` (the one gpt-fast uses), which reads the
    int8 matrix once and accumulates in float32; it takes bf16 inputs and scales (its float32 path is a slow
    fallback), so `x` goes in as bf16 and the result comes back in `x`'s dtype (benchmarks/int8_kernels.py). It
    needs the input width to be a multiple of 16; other widths and other devices dequantise on the fly.
    """
    shape = x.shape
    x2 = x.reshape(-1, shape[-1])
    if x.device.type == "cpu" and shape[-1] % 16 == 0 and weight.is_contiguous():
        x_bf16 = x2.to(torch.bfloat16).contiguous()
        y = torch.ops.aten._weight_int8pack_mm(x_bf16, weight, scale.to(torch.bfloat16)).to(x.dtype)
    else:
        y = (x2 @ weight.to(x.dtype).t()) * scale.to(x.dtype)
    if bias is not None:
        y = y + bias.to(y.dtype)
    return y.view(*shape[:-1], weight.shape[0])


def cache_dtype(dtype: torch.dtype, device: torch.device | str) -> torch.dtype:
    """The dtype a KV cache (and so attention over it) is stored in for a model of `dtype` on `device`: float32 for
    bfloat16 on a CPU, where PyTorch's attention of one query over many keys runs much slower in bf16
    (benchmarks/attention_dtype.py); the model's own dtype elsewhere."""
    if dtype == torch.bfloat16 and torch.device(device).type == "cpu":
        return torch.float32
    return dtype


def prepare_decoding(weight: torch.Tensor, matrices: Callable[[], Iterable[torch.Tensor]]) -> None:
    """Before a decoding step: store the weight matrices in the order one-token steps run fastest in on this device
    and dtype (`cpu/decode_layout.py`). `weight` is a matrix the decode step reads (the LM head): when it already is
    in that order nothing is done, so this costs nothing per step; `matrices()` lists every matrix to arrange."""
    want = decode_layout.wanted(weight)
    if decode_layout.is_transposed(weight) != want:
        decode_layout.arrange(matrices(), want)


def prepare_training(matrices: Iterable[torch.Tensor]) -> None:
    """Before training: every matrix back in PyTorch's usual order, which training runs fastest with."""
    decode_layout.arrange(matrices, False)
