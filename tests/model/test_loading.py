"""The one loader: model and tokenizer from a dir, or random weights of a preset, with the tokenizer rules."""

from __future__ import annotations

import pytest
import torch

import gpt1
from gpt1 import GPT, GPT1Config
from gpt1.loading import DEFAULT_TOKENIZER, load, load_model, load_tokenizer, model_source
from gpt1.tokenizer.bpe import Tokenizer


def test_preset_source_is_random_weights_with_overrides():
    torch.manual_seed(0)
    model = load_model("preset:tiny", dtype=torch.bfloat16, n_positions=32, vocab_size=300)
    assert not model.training and model.dtype == torch.bfloat16
    assert (model.config.n_layer, model.config.n_positions, model.config.vocab_size) == (2, 32, 300)
    with pytest.raises(ValueError, match="Unknown preset 'huge'"):
        load_model("preset:huge")


def test_dir_source_with_its_tokenizer(tmp_path, gpt1_tokenizer):
    saved = GPT(GPT1Config(n_layer=1, n_embd=32, n_head=2, n_positions=16))
    saved.save_pretrained(tmp_path, tokenizer=gpt1_tokenizer)
    model, tok = load(str(tmp_path))
    assert len(tok) == len(gpt1_tokenizer) and not model.training
    assert torch.equal(model.h[0].mlp.c_fc.weight, saved.h[0].mlp.c_fc.weight)
    assert load(tmp_path, tokenizer=gpt1_tokenizer)[1] is gpt1_tokenizer  # a Tokenizer given is used as it is
    grown = load_model(tmp_path, vocab_size=40480)
    assert grown.config.vocab_size == 40480 and torch.equal(
        grown.tokens_embed.weight[:40478], saved.tokens_embed.weight
    )
    with pytest.raises(ValueError, match="model_overrides apply to --preset models only"):
        load_model(tmp_path, n_layer=3)
    assert gpt1.load is load


def test_which_tokenizer(monkeypatch):
    asked = []
    monkeypatch.setattr(Tokenizer, "from_pretrained", classmethod(lambda cls, name: asked.append(str(name))))
    load_tokenizer(None, "runs/a")
    load_tokenizer("vocab", "runs/a")
    load_tokenizer(None, "preset:tiny")  # a preset has no tokenizer of its own
    load_tokenizer()
    assert asked == ["runs/a", "vocab", DEFAULT_TOKENIZER, DEFAULT_TOKENIZER]


def test_model_source():
    assert model_source("runs/a", None) == "runs/a" and model_source(None, "tiny") == "preset:tiny"
    with pytest.raises(ValueError, match="exactly one"):
        model_source(None, None)
    with pytest.raises(ValueError, match="--model or --preset"):
        model_source("a", "tiny", "Give --model or --preset.")
