"""Fixtures of the inference tests: a small GPT-1-shaped network and transformers' OpenAIGPT on the same weights.

The network has 2 layers, width 64 and a 1000-token vocabulary, its weights drawn with std 0.3 so greedy does not
collapse onto one repeated token: exactness does not depend on the width, and HF's no-cache `generate` over 200
tokens at the full config would dominate CI time.
"""

from __future__ import annotations

import pytest
import torch

from gpt1 import GPT, GPT1Config
from gpt1.checkpoint import ours_to_hf

SMALL = dict(vocab_size=1000, n_positions=256, n_embd=64, n_layer=2, n_head=4, initializer_range=0.3)


@pytest.fixture(scope="session")
def small_config() -> dict:
    return dict(SMALL)


@pytest.fixture(scope="module")
def ours() -> GPT:
    torch.manual_seed(0)
    return GPT(GPT1Config(**SMALL)).eval()


@pytest.fixture(scope="module")
def hf(ours):
    transformers = pytest.importorskip("transformers", reason="transformers 4.x is the reference implementation")
    transformers.logging.set_verbosity_error()
    cfg = transformers.OpenAIGPTConfig(**{k: v for k, v in SMALL.items() if k != "initializer_range"})
    model = transformers.OpenAIGPTLMHeadModel(cfg).eval()
    missing, unexpected = model.load_state_dict(ours_to_hf(ours.state_dict()), strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}, (missing, unexpected)
    assert model.lm_head.weight.data_ptr() == model.transformer.tokens_embed.weight.data_ptr()  # tied, so loaded
    return model


@pytest.fixture(scope="session")
def prompt():
    """`prompt(n, seed)`: a (1, n) batch of random ids from the small vocabulary."""

    def make(n: int, seed: int) -> torch.Tensor:
        return torch.randint(0, SMALL["vocab_size"], (1, n), generator=torch.Generator().manual_seed(seed))

    return make


@pytest.fixture(scope="module")
def text_model() -> GPT:
    """The `tiny` preset with GPT-1's vocabulary, for tests that read text."""
    torch.manual_seed(0)
    return GPT(GPT1Config.from_preset("tiny", initializer_range=0.3)).eval()
