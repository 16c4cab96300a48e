"""Model configuration: the GPT-1 hyper-parameters, named presets, and HF `config.json` interop."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

GPT1_VOCAB_SIZE = 40478  # 40000 BPE merges + base symbols, as released by OpenAI (id 40477 = "\n</w>")
DEFAULT_TOKENIZER = "openai-community/openai-gpt"  # GPT-1's own BPE vocabulary, on the hub
PRESET_PREFIX = "preset:"  # a model source "preset:NAME" means random weights of that preset


# config.json's `quantization_config` of an int8 model (gpt1.model.quantize): what the stored tensors mean.
INT8_QUANT_METHOD = "gpt1_int8"
INT8_SCHEME = {"bits": 8, "symmetric": True, "granularity": "per_output_channel", "scale_dtype": "bfloat16"}


@dataclass
class GPT1Config:
    """Hyper-parameters of a GPT-1-architecture network; field names follow HF's `OpenAIGPTConfig`."""

    vocab_size: int = GPT1_VOCAB_SIZE
    n_positions: int = 512
    n_embd: int = 768
    n_layer: int = 12
    n_head: int = 12
    afn: str = "gelu"  # "gelu" is the tanh approximation the original used (HF: gelu_new)
    resid_pdrop: float = 0.1
    embd_pdrop: float = 0.1
    attn_pdrop: float = 0.1
    layer_norm_epsilon: float = 1e-5
    initializer_range: float = 0.02
    # Task heads (fine-tuning issue); 0 means the model has no task head.
    num_labels: int = 0
    summary_first_dropout: float = 0.1
    # Free-form extras carried through save/load (e.g. special token ids, the task name).
    extra: dict[str, Any] = field(default_factory=dict)
    # None: float weights; "int8": weight-only int8 (gpt1.model.quantize), saved as config.json's quantization_config.
    quantization: str | None = None

    def __post_init__(self) -> None:
        checks = {
            "vocab_size": self.vocab_size > 0,
            "n_positions": self.n_positions > 0,
            "n_embd": self.n_embd > 0,
            "n_layer": self.n_layer > 0,
            "n_head": self.n_head > 0 and self.n_embd % max(self.n_head, 1) == 0,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(
                    f"GPT1Config.{name}={getattr(self, name)!r} is invalid: sizes must be positive "
                    f"and n_embd ({self.n_embd}) divisible by n_head ({self.n_head})."
                )
        if self.quantization not in (None, "int8"):
            raise ValueError(f"GPT1Config.quantization={self.quantization!r} is not supported; use None or 'int8'.")
        if self.afn not in ACTIVATIONS:
            raise ValueError(f"GPT1Config.afn={self.afn!r} is not supported; use one of {sorted(ACTIVATIONS)}.")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> GPT1Config:
        """A named preset (see `PRESETS`), with optional field overrides."""
        if name not in PRESETS:
            raise ValueError(f"Unknown preset {name!r}; choose one of: {', '.join(PRESETS)}.")
        return cls(**{**PRESETS[name], **overrides})

    # ---- HF config.json interop -------------------------------------------------------------
    def to_hf_dict(self) -> dict[str, Any]:
        """The `config.json` that `transformers.OpenAIGPTConfig` reads (plus our own `gpt1_*` keys)."""
        d = {
            "model_type": "openai-gpt",
            "architectures": ["OpenAIGPTLMHeadModel"],
            "vocab_size": self.vocab_size,
            "n_positions": self.n_positions,
            "n_embd": self.n_embd,
            "n_layer": self.n_layer,
            "n_head": self.n_head,
            "afn": self.afn,
            "resid_pdrop": self.resid_pdrop,
            "embd_pdrop": self.embd_pdrop,
            "attn_pdrop": self.attn_pdrop,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "initializer_range": self.initializer_range,
            "summary_first_dropout": self.summary_first_dropout,
        }
        if self.num_labels:
            d["gpt1_num_labels"] = self.num_labels
        if self.extra:
            d["gpt1_extra"] = self.extra
        if self.quantization:  # transformers refuses an unknown quant_method rather than load int8 as floats
            d["quantization_config"] = {"quant_method": INT8_QUANT_METHOD, **INT8_SCHEME}
        return d

    @classmethod
    def from_hf_dict(cls, d: dict[str, Any]) -> GPT1Config:
        """Build from an HF `config.json` dict, ignoring keys that do not affect the network."""
        known = {f.name for f in dataclasses.fields(cls)} - {"extra", "num_labels", "quantization"}
        kwargs = {k: v for k, v in d.items() if k in known}
        if "gpt1_num_labels" in d:
            kwargs["num_labels"] = int(d["gpt1_num_labels"])
        kwargs["extra"] = dict(d.get("gpt1_extra", {}))
        quant = d.get("quantization_config")
        if quant is not None:
            method = quant.get("quant_method") if isinstance(quant, dict) else quant
            if method != INT8_QUANT_METHOD:
                raise ValueError(f"quantization_config {quant!r} is not one gpt1 reads (only {INT8_QUANT_METHOD!r})")
            kwargs["quantization"] = "int8"
        return cls(**kwargs)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_hf_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> GPT1Config:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"{path}: cannot read a model config ({e}).") from e
        try:
            return cls.from_hf_dict(data)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path}: not a valid GPT-1 config ({e}).") from e

    def num_parameters(self) -> int:
        """Parameter count of the network with tied LM head (no task head)."""
        e, f = self.n_embd, 4 * self.n_embd
        block = (e * 3 * e + 3 * e) + (e * e + e) + (e * f + f) + (f * e + e) + 4 * e
        return self.vocab_size * e + self.n_positions * e + self.n_layer * block


ACTIVATIONS = ("gelu", "gelu_exact", "relu", "silu", "swish")

# Peak learning rate and warmup steps for pre-training each preset from random weights (AdamW, cosine decay, global
# clipping 1.0). A post-LN stack trained with too high an lr for its warmup sits at the unigram level of its data;
# `benchmarks/lr_sweep.py` (table in the README) found a 300-step warmup decisive, and these are half the fastest lr
# it measured there, for margin. `small` had one run (3e-4, between `mini`'s and the paper's: it learns); `gpt1` is
# the paper's.
SCRATCH_LR: dict[str, tuple[float, int]] = {
    "gpt1": (2.5e-4, 2000),
    "small": (3e-4, 300),
    "mini": (6e-4, 300),
    "tiny": (2e-3, 300),
}


def preset_name(source: object) -> str | None:
    """NAME for a model source `preset:NAME`, else None."""
    if isinstance(source, str) and source.startswith(PRESET_PREFIX):
        return source[len(PRESET_PREFIX) :]
    return None


def scratch_lr(config: GPT1Config) -> tuple[float, int]:
    """(peak lr, warmup steps) for training a model of this shape from random weights: the preset of the same
    depth, else the nearest shallower one (deeper stacks need the smaller lr)."""
    by_depth = sorted(((PRESETS[name]["n_layer"], lr) for name, lr in SCRATCH_LR.items()), reverse=True)
    for depth, lr in by_depth:
        if config.n_layer >= depth:
            return lr
    return by_depth[-1][1]


# Named presets. `gpt1` is the paper's 116.5M model; the small ones keep its shape for CPU work.
PRESETS: dict[str, dict[str, Any]] = {
    "gpt1": dict(n_layer=12, n_embd=768, n_head=12, n_positions=512),
    "small": dict(n_layer=6, n_embd=384, n_head=6, n_positions=512),
    "mini": dict(n_layer=4, n_embd=256, n_head=4, n_positions=256),
    "tiny": dict(n_layer=2, n_embd=128, n_head=4, n_positions=128),
}
