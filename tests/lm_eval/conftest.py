"""Fixtures of the lm-eval tests: a tiny random GPT-1 (GPT-1's real vocabulary, 64 positions) saved with its
tokenizer, transformers' OpenAIGPT on the same weights, and the adapter over it at exact (fp32) precision."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest.importorskip("lm_eval", reason="lm-eval (the eval extra) is not installed")

from gpt1 import GPT, GPT1Config  # noqa: E402

N_POSITIONS = 64


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory, gpt1_tokenizer) -> Path:
    """A 2-layer, width-32 model with weights of std 0.3 (so greedy text does not collapse onto one token)."""
    torch.manual_seed(0)
    config = GPT1Config(
        vocab_size=len(gpt1_tokenizer), n_positions=N_POSITIONS, n_embd=32, n_layer=2, n_head=2, initializer_range=0.3
    )
    out = tmp_path_factory.mktemp("tiny")
    GPT(config).eval().save_pretrained(out, tokenizer=gpt1_tokenizer)
    return out


@pytest.fixture(scope="session")
def tiny(tiny_dir):
    """(model, tokenizer) loaded from `tiny_dir`, as gpt1's own evaluation sees them."""
    from gpt1.loading import load

    return load(tiny_dir)


@pytest.fixture(scope="session")
def lm(tiny_dir):
    from gpt1.lm_eval import GPT1LM

    return GPT1LM(pretrained=str(tiny_dir), precision="fp32", batch_size=4)


@pytest.fixture(scope="session")
def hf(tiny_dir):
    transformers = pytest.importorskip("transformers", reason="transformers 4.x is the reference implementation")
    transformers.logging.set_verbosity_error()
    return transformers.OpenAIGPTLMHeadModel.from_pretrained(tiny_dir).eval()


@pytest.fixture(autouse=True)
def _no_environment_report(monkeypatch):
    """lm-eval's results carry a report of the machine (torch's collect_env, seconds of subprocesses): not tested."""
    import lm_eval.evaluator

    monkeypatch.setattr(lm_eval.evaluator, "add_env_info", lambda results: None)
