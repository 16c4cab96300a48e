"""Sliding-window perplexity: every token scored once, and equal to the model's loss on a short text."""

from __future__ import annotations

import math

import pytest
import torch

from gpt1 import GPT, GPT1Config
from gpt1.evaluation.perplexity import perplexity


def _lm(seed=0, **kw):
    torch.manual_seed(seed)
    return GPT(GPT1Config.from_preset("tiny", vocab_size=300, n_positions=32, **kw)).eval()


class _CharTok:
    """Characters as ids: perplexity tests need a tokenizer, not GPT-1's vocabulary."""

    def encode(self, text):
        return [ord(ch) % 300 for ch in text]


def test_perplexity_windows_score_every_token_once():
    model = _lm()
    text = "the quick brown fox jumps over the lazy dog. " * 3
    n = len(text)
    results = [
        perplexity(model, _CharTok(), text, stride=s, max_length=32, batch_size=3, precision="fp32")
        for s in (32, 16, 7)
    ]
    for r in results:
        assert r["scored_tokens"] == n - 1 and r["bytes"] == n
        assert r["bits_per_byte"] == pytest.approx(r["nll_per_token"] * (n - 1) / math.log(2) / n)
    # More context per token (smaller stride) changes the numbers; all stay finite.
    assert len({round(r["perplexity"], 6) for r in results}) == 3
    short = perplexity(model, _CharTok(), text[:20], precision="fp32")
    ids = torch.tensor([_CharTok().encode(text[:20])])
    with torch.no_grad():
        expected = model(ids, labels=ids).loss
    assert short["perplexity"] == pytest.approx(math.exp(float(expected)), rel=1e-4)
    with pytest.raises(ValueError, match="stride=40 must be in 1..32"):
        perplexity(model, _CharTok(), text, stride=40)
    with pytest.raises(ValueError, match="max_length=1 must be in 2.."):  # a 1-token window would never advance
        perplexity(model, _CharTok(), text, max_length=1)
