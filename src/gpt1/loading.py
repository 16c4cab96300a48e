"""The one loader: a model and its tokenizer from a run / HF dir, a hub id, OpenAI's npy release, or `preset:NAME`.

`preset:NAME` means random weights with that preset's config; it has no tokenizer of its own, so it gets the one
asked for or GPT-1's (`DEFAULT_TOKENIZER`). Every other source carries its tokenizer files next to its weights.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from gpt1.config import DEFAULT_TOKENIZER, PRESET_PREFIX, GPT1Config, preset_name
from gpt1.model.gpt import GPT
from gpt1.tokenizer.bpe import Tokenizer

__all__ = [
    "DEFAULT_TOKENIZER",
    "convert_original",
    "load",
    "load_model",
    "load_tokenizer",
    "model_source",
    "preset_name",
]

Source = str | os.PathLike  # a model dir, a hub id, an OpenAI release dir, or "preset:NAME"


def model_source(model: Source | None, preset: str | None, message: str | None = None) -> Source:
    """The source for a recipe's `model=` / `preset=` pair (exactly one of them given): the path, or `preset:NAME`."""
    if (model is None) == (preset is None):
        raise ValueError(message or "Give exactly one of model (weights to start from) and preset (random weights).")
    return model if model is not None else PRESET_PREFIX + preset


def load_model(
    source: Source,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    vocab_size: int | None = None,
    **config_overrides: Any,
) -> GPT:
    """A `GPT` in eval mode from `source`; `config_overrides` (GPT1Config fields) apply to presets only.

    `vocab_size`: a preset's vocabulary; a checkpoint with fewer rows grows to it (`resize_token_embeddings`).
    """
    name = preset_name(source)
    if name is not None:
        overrides = {**config_overrides, **({"vocab_size": vocab_size} if vocab_size is not None else {})}
        model = GPT(GPT1Config.from_preset(name, **overrides)).to(dtype=dtype, device=device)
        return model.eval()
    if config_overrides:
        raise ValueError("model_overrides apply to --preset models only; a --model keeps its saved architecture.")
    model = GPT.from_pretrained(source, dtype=dtype, device=device)
    if vocab_size is not None and model.config.vocab_size < vocab_size:
        model.resize_token_embeddings(vocab_size)
    return model


def load_tokenizer(source: Source | Tokenizer | None = None, fallback_model: Source | None = None) -> Tokenizer:
    """`source` itself if it is a `Tokenizer`, else the one at that dir / hub id; None: the tokenizer saved with
    `fallback_model` (a model dir or hub id), or GPT-1's when there is none (or it is a preset)."""
    if isinstance(source, Tokenizer):
        return source
    if source is None:
        source = fallback_model if fallback_model is not None and preset_name(fallback_model) is None else None
    return Tokenizer.from_pretrained(source if source is not None else DEFAULT_TOKENIZER)


def load(
    source: Source,
    tokenizer: Source | Tokenizer | None = None,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    **config_overrides: Any,
) -> tuple[GPT, Tokenizer]:
    """(model, tokenizer) from `source`; the tokenizer is `tokenizer` when given, else the one saved with the model
    (GPT-1's for a preset). See `load_model` for the rest."""
    model = load_model(source, device=device, dtype=dtype, **config_overrides)
    return model, load_tokenizer(tokenizer, fallback_model=source)


def convert_original(original_dir: Source, out_dir: Source) -> Path:
    """Turn OpenAI's npy release into an HF model dir (tokenizer files too, when the release has them)."""
    model = load_model(original_dir)
    tokenizer = None
    if (Path(original_dir) / "encoder_bpe_40000.json").exists():
        tokenizer = Tokenizer.from_pretrained(original_dir)
    return model.save_pretrained(out_dir, tokenizer=tokenizer)
