"""The GPT-1 network, top to bottom: causal self-attention, MLP, post-LN `Block`, and `GPT` with its tied LM head.

Module and parameter names follow the original release / HF (`tokens_embed`, `h.0.attn.c_attn`, `ln_1` ...) so
checkpoints map one-to-one; weights are stored as `nn.Linear` (out, in) and transposed from HF's `Conv1D` (in, out)
layout by `gpt1.checkpoint`. Attention, dropout and the training loss go through `gpt1.kernels`, which picks the
fastest implementation for the device; the KV cache is `gpt1.model.cache.KVCache`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

import gpt1.checkpoint as checkpoint
import gpt1.kernels as kernels
from gpt1.config import GPT1Config
from gpt1.model import quantize as quant
from gpt1.model.cache import KVCache
from gpt1.model.losses import lm_loss

__all__ = ["GPT", "GPTOutput", "KVCache", "Block", "CausalSelfAttention", "MLP", "Dropout", "activation"]


def activation(name: str):
    """The MLP nonlinearity by the name a GPT-1 config uses; `gelu` is the original's tanh approximation."""
    return {
        "gelu": lambda x: F.gelu(x, approximate="tanh"),
        "gelu_exact": F.gelu,
        "relu": F.relu,
        "silu": F.silu,
        "swish": F.silu,
    }[name]


class Dropout(nn.Dropout):
    """`nn.Dropout` through `gpt1.kernels.dropout` (same constructor, no parameters: checkpoints are unaffected)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return kernels.dropout(x, self.p, self.training)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPT1Config) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)
        self.attn_pdrop = config.attn_pdrop
        self.resid_dropout = Dropout(config.resid_pdrop)

    def forward(
        self,
        x: torch.Tensor,
        attn_mask: torch.Tensor | None,
        cache: KVCache | None = None,
        layer: int = 0,
    ) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        past = 0
        if cache is not None:
            past = cache.length
            k, v = cache.append(layer, k, v)
        dropout_p = self.attn_pdrop if self.training else 0.0
        y = kernels.attention(q, k, v, attn_mask, dropout_p, past)
        y = y.transpose(1, 2).reshape(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, config: GPT1Config) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd)
        self.act = activation(config.afn)
        self.dropout = Dropout(config.resid_pdrop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.act(self.c_fc(x))))


class Block(nn.Module):
    """Post-LayerNorm block of the original: h = LN(x + attn(x)); out = LN(h + mlp(h))."""

    def __init__(self, config: GPT1Config) -> None:
        super().__init__()
        self.attn = CausalSelfAttention(config)
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.mlp = MLP(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)

    def forward(self, x, attn_mask=None, cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        h = self.ln_1(x + self.attn(x, attn_mask, cache, layer))
        return self.ln_2(h + self.mlp(h))


@dataclass
class GPTOutput:
    """What `GPT.forward` returns; `.logits` and `.loss` mean exactly what HF's `OpenAIGPTLMHeadModel` returns."""

    logits: torch.Tensor | None = None
    loss: torch.Tensor | None = None
    hidden_states: torch.Tensor | None = None  # final hidden states (B, T, C): task heads read these
    cache: KVCache | None = None


class GPT(nn.Module):
    """GPT-1: token + learned position embeddings, N post-LN blocks, no final LayerNorm, LM head tied to tokens."""

    def __init__(self, config: GPT1Config) -> None:
        super().__init__()
        self.config = config
        self.tokens_embed = nn.Embedding(config.vocab_size, config.n_embd)
        self.positions_embed = nn.Embedding(config.n_positions, config.n_embd)
        self.drop = Dropout(config.embd_pdrop)
        self.h = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.tokens_embed.weight  # weight tying, as in the paper
        # Optional task head (fine-tuning): a linear map of the final hidden state at the extract token.
        self.task_head = nn.Linear(config.n_embd, config.num_labels) if config.num_labels else None
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        """N(0, 0.02) for matrices and embeddings, zero biases, unit LayerNorm gains (the paper's init)."""
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=self.config.initializer_range)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    # ---- sizes -------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.tokens_embed.weight.device

    @property
    def dtype(self) -> torch.dtype:
        """The activations' dtype (float32 for an int8 model, whose matrices are int8): the position table's."""
        return self.positions_embed.weight.dtype

    @property
    def is_quantized(self) -> bool:
        """Whether the matrices are int8 (`quantize("int8")`, or loaded from an int8 checkpoint)."""
        return quant.is_quantized(self)

    def num_parameters(self) -> int:
        """Unique parameters (the tied LM head counted once; an int8 model's int8 matrices included)."""
        int8 = sum(b.numel() for b in self.buffers() if b.dtype == torch.int8)
        return sum(p.numel() for p in self.parameters()) + int8

    def quantize(self, mode: str = "int8") -> GPT:
        """Store every linear layer and the tied embedding / LM head as int8 with per-channel scales, in place
        (`gpt1.model.quantize`); activations stay float32. Returns the model, in eval mode."""
        if mode != quant.INT8:
            raise ValueError(f"quantize({mode!r}) is not supported; use 'int8'.")
        return quant.quantize_(self)

    def resize_token_embeddings(self, new_size: int) -> None:
        """Grow the vocabulary to `new_size`, appending N(0, 0.02) rows (room for special tokens); keeps the tie."""
        old = self.tokens_embed.weight
        if new_size < old.shape[0]:
            raise ValueError(
                f"resize_token_embeddings({new_size}) would drop tokens: the vocabulary has {old.shape[0]}."
            )
        if new_size == old.shape[0]:
            return
        quant.refuse_training(self)  # new rows are for fine-tuning, which an int8 model cannot do
        extra = torch.empty(new_size - old.shape[0], old.shape[1], device=old.device, dtype=old.dtype)
        nn.init.normal_(extra, mean=0.0, std=self.config.initializer_range)
        self.tokens_embed = nn.Embedding(new_size, old.shape[1], device=old.device, dtype=old.dtype)
        with torch.no_grad():
            self.tokens_embed.weight.copy_(torch.cat([old.detach(), extra]))
        self.lm_head = nn.Linear(old.shape[1], new_size, bias=False, device=old.device, dtype=old.dtype)
        self.lm_head.weight = self.tokens_embed.weight
        self.config.vocab_size = new_size

    # ---- weight layout -------------------------------------------------------------------------
    def _matrices(self) -> list[nn.Parameter]:
        """The weight matrices a decode step streams through (a step reads one row of the position table)."""
        return [p for p in self.parameters() if p.dim() == 2 and p is not self.positions_embed.weight]

    def train(self, mode: bool = True) -> GPT:
        if mode:
            quant.refuse_training(self)
            kernels.prepare_training(self._matrices())
        return super().train(mode)

    # ---- forward -------------------------------------------------------------------------------
    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache: KVCache | None = None,
        logits_to_keep: int = 0,
        return_logits: bool = True,
        segment_ids: torch.Tensor | None = None,
    ) -> GPTOutput:
        """Run the network on `input_ids` (B, T).

        attention_mask: (B, past+T) with 1 for real tokens and 0 for padding (HF's convention).
        labels: (B, T) next-token targets, shifted inside; -100 is ignored (HF's `loss`).
        position_ids: (B, T); default `past + arange(T)` (generation with left padding passes per-row positions).
        cache: a `KVCache` to read past keys from and append this call's keys to.
        logits_to_keep: if > 0, compute logits only for the last that many positions (decoding needs one).
        return_logits: False (training) computes the loss without the (B, T, vocab) logits (`kernels.lm_loss`).
        segment_ids: (B, T) packed rows: tokens attend only within their own segment (1, 2, ...; 0 = padding).
        """
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must have shape (batch, seq_len); got {tuple(input_ids.shape)}.")
        B, T = input_ids.shape
        past = cache.length if cache is not None else 0
        if T == 0:
            raise ValueError("input_ids is empty: give at least one token.")
        if past + T > self.config.n_positions:
            raise ValueError(
                f"Sequence of {past + T} tokens is longer than the model's context of "
                f"{self.config.n_positions} positions; shorten the input (or truncate from the left)."
            )
        if cache is not None and not self.training:
            kernels.prepare_decoding(self.lm_head.weight, self._matrices)  # nothing to do after the first step
        if position_ids is None:
            position_ids = torch.arange(past, past + T, device=input_ids.device).unsqueeze(0)
        x = self.drop(self.tokens_embed(input_ids) + self.positions_embed(position_ids))

        attn_dtype = cache.dtype if cache is not None else x.dtype  # the dtype attention runs in
        if segment_ids is not None:
            if cache is not None or attention_mask is not None:
                raise ValueError("segment_ids (packed rows) take neither a cache nor an attention_mask.")
            attn_mask = self._segment_bias(segment_ids, attn_dtype)
        else:
            attn_mask = self._attention_bias(attention_mask, cache, B, T, past, attn_dtype)
        for i, block in enumerate(self.h):
            x = block(x, attn_mask, cache, i)
        if cache is not None:
            cache.length = past + T

        hidden = x
        if labels is not None and not return_logits:
            return GPTOutput(loss=kernels.lm_loss(x, self.lm_head.weight, labels), hidden_states=hidden, cache=cache)
        if logits_to_keep:
            x = x[:, -logits_to_keep:]
        logits = self.lm_head(x)
        loss = lm_loss(logits, labels) if labels is not None else None
        return GPTOutput(logits=logits, loss=loss, hidden_states=hidden, cache=cache)

    @staticmethod
    def _attention_bias(attention_mask, cache, B, T, past, dtype) -> torch.Tensor | None:
        """Additive (B, 1, T, past+T) bias: 0 where a query may look, the dtype's minimum elsewhere; None if causal
        attention suffices.

        A float bias (not a boolean mask) keeps rows that see no real key — queries on left padding — finite,
        as in HF, instead of NaN.
        """
        key_mask = None
        if attention_mask is not None:
            key_mask = attention_mask.bool()
            if key_mask.shape != (B, past + T):
                raise ValueError(
                    f"attention_mask must have shape (batch, past + seq_len) = {(B, past + T)}; got {tuple(key_mask.shape)}."
                )
        if cache is not None:
            key_mask = cache.update_key_mask(key_mask, past + T)  # padding given at the prefill holds for later steps
        if key_mask is None:
            return None  # no padding anywhere: plain causal attention
        if T == 1 and bool(key_mask.all()):
            return None
        device = key_mask.device
        causal = torch.arange(past + T, device=device)[None, :] <= torch.arange(past, past + T, device=device)[:, None]
        allowed = causal[None, :, :] & key_mask[:, None, :]
        bias = torch.zeros(allowed.shape, dtype=dtype, device=device)
        bias.masked_fill_(~allowed, torch.finfo(dtype).min)
        return bias.unsqueeze(1)

    @staticmethod
    def _segment_bias(segment_ids: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Additive (B, 1, T, T) block-diagonal causal bias for packed rows; a padding query sees itself only, so its
        (ignored) output stays finite."""
        T = segment_ids.shape[1]
        device = segment_ids.device
        causal = torch.ones(T, T, dtype=torch.bool, device=device).tril()
        same = segment_ids[:, :, None] == segment_ids[:, None, :]
        allowed = causal[None] & same & (segment_ids[:, None, :] > 0)
        allowed |= torch.eye(T, dtype=torch.bool, device=device)[None]
        bias = torch.zeros(allowed.shape, dtype=dtype, device=device)
        bias.masked_fill_(~allowed, torch.finfo(dtype).min)
        return bias.unsqueeze(1)

    # ---- generation (in gpt1.inference) ------------------------------------------------------------
    def generate(self, input_ids, attention_mask=None, **kwargs):
        """Greedy / sampling / beam-search continuation on the KV cache: `gpt1.inference.generate.generate` (HF's
        argument names: max_new_tokens, do_sample, temperature, top_k, top_p, num_beams, eos_token_id, seed ...)."""
        from gpt1.inference.generate import generate  # a convenience: inference builds on the model, not the reverse

        return generate(self, input_ids, attention_mask, **kwargs)

    # ---- checkpoints (files in checkpoint.py) ----------------------------------------------------
    @classmethod
    def from_pretrained(cls, name_or_path, dtype: torch.dtype | str | None = None, device=None) -> GPT:
        """Load from an HF model dir, an OpenAI npy release dir, a gpt1 run dir, or a hub id (in eval mode).

        dtype "int8" quantises a float checkpoint as it loads (`quantize`); an int8 checkpoint (`gpt1 quantize`)
        loads as int8 without quantising again, with dtype None or "int8"."""
        if isinstance(dtype, str) and dtype != quant.INT8:
            raise ValueError(f"dtype={dtype!r} is not supported; use a torch dtype or 'int8'.")
        config, state, path = checkpoint.read(name_or_path)
        model = cls(config)
        if config.quantization:
            if dtype not in (None, quant.INT8):
                raise ValueError(f"{path}: is an int8 model; load it with dtype 'int8' (or none), not {dtype}.")
            quant.int8_skeleton(model)
        checkpoint.load_into(model, state, source=path)
        if dtype == quant.INT8 and not model.is_quantized:
            return model.quantize(quant.INT8).to(device=device)
        return model.to(dtype=None if model.is_quantized else dtype, device=device).eval()

    def save_pretrained(self, out_dir, tokenizer=None) -> Path:
        """Write `config.json` + `model.safetensors` (+ tokenizer files) that HF's OpenAIGPTLMHeadModel loads."""
        return checkpoint.write(out_dir, self.config, self.state_dict(), tokenizer=tokenizer)
