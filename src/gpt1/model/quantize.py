"""int8 weight-only quantisation: every `nn.Linear` and the tied token embedding / LM head stored as int8.

Symmetric, per output channel (a row of an (out, in) matrix, a token's row of the embedding): `w ≈ q * scale` with
`q` in [-127, 127] and `scale = max|row| / 127`, rounded *up* to the next bfloat16 so that no weight clips. Scales are
bfloat16 because PyTorch's CPU int8 kernel takes its scales in the dtype of its (bf16) input: a bf16 scale is then
used exactly as stored, and costs half the bytes; rounding it up widens the quantisation step by at most 2^-8.
Activations (LayerNorm, attention, residuals, biases, the position table) stay float32 on every CPU: only the
matrix products read int8 (`gpt1.kernels.int8_linear`), so CPUs without AVX-512 BF16 never run emulated bf16 maths.

The token embedding and the LM head share one int8 matrix, as the float model shares one tensor: the lookup
dequantises the rows it reads, the head multiplies by the whole matrix. The kernel returns bf16 results (8
significant bits), which is plenty for hidden states but swaps near-tied top logits, and so greedy and beam choices;
the head therefore recomputes each row's few largest logits in float32 from their int8 rows.
"""

from __future__ import annotations

import torch
import torch.nn as nn

import gpt1.kernels as kernels

__all__ = [
    "INT8",
    "Int8Embedding",
    "Int8Linear",
    "TiedInt8Head",
    "int8_skeleton",
    "is_quantized",
    "quantize_",
    "refine_top_logits",
    "refuse_training",
    "symmetric_int8",
]

INT8 = "int8"
QMAX = 127
REFINED_LOGITS = 8  # per row: the candidates bf16 rounding could reorder against the best one


def symmetric_int8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(q int8 (out, in), scale bf16 (out,)) with `weight ≈ q * scale[:, None]`, one scale per row, no clipping."""
    w = weight.detach().float()
    scale = (w.abs().amax(dim=1) / QMAX).clamp_min(torch.finfo(torch.bfloat16).tiny)
    s = scale.to(torch.bfloat16)
    s.view(torch.int16)[s.float() < scale] += 1  # next bf16 up (scales are positive: the bit pattern orders them)
    q = torch.round(w / s.float()[:, None]).clamp_(-QMAX, QMAX).to(torch.int8)
    return q.contiguous(), s


class Int8Linear(nn.Module):
    """`nn.Linear` with an int8 weight (buffers `weight`, `weight_scale`) and a float32 bias."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("weight", torch.zeros(out_features, in_features, dtype=torch.int8, device=device))
        self.register_buffer("weight_scale", torch.ones(out_features, dtype=torch.bfloat16, device=device))
        self.bias = nn.Parameter(torch.zeros(out_features, device=device), requires_grad=False) if bias else None

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> Int8Linear:
        out = cls(linear.in_features, linear.out_features, linear.bias is not None, device=linear.weight.device)
        out.weight, out.weight_scale = symmetric_int8(linear.weight)
        if linear.bias is not None:
            out.bias.data = linear.bias.detach().float()
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return kernels.int8_linear(x, self.weight, self.weight_scale, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, int8"


class Int8Embedding(nn.Module):
    """`nn.Embedding` with an int8 table and one scale per token; looked-up rows come back float32."""

    def __init__(self, num_embeddings: int, embedding_dim: int, device=None) -> None:
        super().__init__()
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.register_buffer("weight", torch.zeros(num_embeddings, embedding_dim, dtype=torch.int8, device=device))
        self.register_buffer("weight_scale", torch.ones(num_embeddings, dtype=torch.bfloat16, device=device))

    @classmethod
    def from_embedding(cls, embedding: nn.Embedding) -> Int8Embedding:
        out = cls(embedding.num_embeddings, embedding.embedding_dim, device=embedding.weight.device)
        out.weight, out.weight_scale = symmetric_int8(embedding.weight)
        return out

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.weight[ids].float() * self.weight_scale[ids].float().unsqueeze(-1)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, int8"


class TiedInt8Head(nn.Module):
    """The LM head tied to an `Int8Embedding`: logits = x @ (q * scale).T, with no tensors of its own (so the
    state dict holds the shared matrix once, under `tokens_embed`)."""

    def __init__(self, embedding: Int8Embedding) -> None:
        super().__init__()
        self._tied = (embedding,)  # a tuple: not registered as a submodule, so not saved twice

    @property
    def weight(self) -> torch.Tensor:
        return self._tied[0].weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        embedding = self._tied[0]
        logits = kernels.int8_linear(x, embedding.weight, embedding.weight_scale)
        return refine_top_logits(logits, x, embedding.weight, embedding.weight_scale)


def refine_top_logits(
    logits: torch.Tensor, x: torch.Tensor, q: torch.Tensor, scale: torch.Tensor, k: int = REFINED_LOGITS
) -> torch.Tensor:
    """`logits` (..., vocab) with each row's `k` largest entries recomputed in float32 as `x . (q * scale)`, in place;
    in chunks of rows, so gathering the (rows, k, width) candidates stays small for a long prompt."""
    if logits.dtype != torch.float32:
        return logits
    flat, xs = logits.view(-1, logits.shape[-1]), x.reshape(-1, x.shape[-1]).float()
    for start in range(0, flat.shape[0], 256):
        rows = flat[start : start + 256]
        idx = rows.topk(min(k, rows.shape[-1]), dim=-1).indices
        exact = torch.einsum("nkd,nd->nk", q[idx].float(), xs[start : start + 256]) * scale[idx].float()
        rows.scatter_(-1, idx, exact)
    return logits


def is_quantized(model: nn.Module) -> bool:
    """Whether `model` holds int8 weights (a `GPT` after `quantize_` or loaded from an int8 checkpoint)."""
    return isinstance(getattr(model, "tokens_embed", None), Int8Embedding)


def _swap(model: nn.Module, compute: bool) -> None:
    """Replace the float modules of a GPT by their int8 forms: quantised from the weights if `compute`, else
    empty ones to load an int8 checkpoint into."""
    model.float()  # activations, biases and LayerNorms in float32 (a bf16 model's values are kept exactly)
    kernels.prepare_training(p for p in model.parameters() if p.dim() == 2)  # plain (out, in) memory order
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear) and not (parent is model and name == "lm_head"):
                dev = child.weight.device
                new = (
                    Int8Linear.from_linear(child)
                    if compute
                    else Int8Linear(child.in_features, child.out_features, child.bias is not None, device=dev)
                )
                setattr(parent, name, new)
    emb = model.tokens_embed
    model.tokens_embed = (
        Int8Embedding.from_embedding(emb)
        if compute
        else Int8Embedding(emb.num_embeddings, emb.embedding_dim, device=emb.weight.device)
    )
    model.lm_head = TiedInt8Head(model.tokens_embed)
    model.config.quantization = INT8


def quantize_(model: nn.Module) -> nn.Module:
    """Quantise a float `GPT` to int8 in place (see the module docstring) and return it, in eval mode."""
    if not is_quantized(model):
        with torch.no_grad():
            _swap(model, compute=True)
    return model.eval()


def int8_skeleton(model: nn.Module) -> nn.Module:
    """A `GPT` (just built, any weights) with empty int8 modules in place, for an int8 checkpoint to load into
    without quantising anything."""
    with torch.no_grad():
        _swap(model, compute=False)
    return model


def refuse_training(model: nn.Module, source: object = None) -> None:
    """Raise one clear ValueError if `model` is int8: its weights have no gradients to train."""
    if is_quantized(model):
        where = f"{source}: " if source is not None else ""
        raise ValueError(
            f"{where}this model is int8 (weight-only quantised) and cannot be trained; it runs generate, evaluate "
            "and serve. Train from the float checkpoint it was quantised from."
        )
