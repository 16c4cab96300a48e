"""The network against transformers' OpenAIGPTLMHeadModel on the same random weights, at the full `gpt1` config."""

from __future__ import annotations

import pytest
import torch

from gpt1 import GPT, GPT1Config
from gpt1.checkpoint import hf_to_ours, load_into

transformers = pytest.importorskip("transformers", reason="transformers 4.x is the reference implementation")

TOL = 1e-4


@pytest.fixture(scope="module")
def pair():
    """HF's model and ours holding the same random weights (HF → ours)."""
    torch.manual_seed(0)
    hf = transformers.OpenAIGPTLMHeadModel(transformers.OpenAIGPTConfig()).eval()
    ours = GPT(GPT1Config.from_preset("gpt1")).eval()
    load_into(ours, hf_to_ours(hf.state_dict()), source="hf")
    return hf, ours


@pytest.fixture(scope="module")
def batch():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 40478, (2, 96), generator=g)
    labels = ids.clone()
    labels[0, :7] = -100  # ignored positions must be ignored the same way
    return ids, labels


def test_logits_and_loss_match_hf(pair, batch):
    hf, ours = pair
    ids, labels = batch
    with torch.no_grad():
        ref, got = hf(ids, labels=labels), ours(ids, labels=labels)
    assert got.logits.shape == (2, 96, 40478)
    assert (ref.logits - got.logits).abs().max().item() <= TOL
    assert abs(ref.loss.item() - got.loss.item()) <= TOL


def test_padding_mask_matches_hf_on_real_tokens(pair, batch):
    hf, ours = pair
    ids, labels = batch
    mask = torch.ones_like(ids)
    mask[1, :20] = 0  # left padding in row 1
    mask[0, 80:] = 0  # right padding in row 0
    with torch.no_grad():
        ref, got = hf(ids, attention_mask=mask), ours(ids, attention_mask=mask)
    real = mask.bool()
    # Queries on left padding see no real key; their (unused) outputs are undefined in both implementations.
    real[1, :20] = False
    assert (ref.logits - got.logits)[real].abs().max().item() <= TOL
    assert torch.isfinite(got.logits).all()
    # Padding really is ignored: row 1's real tokens, alone at the same positions, give the same logits.
    with torch.no_grad():
        shifted = ours(ids[1:, 20:], position_ids=torch.arange(20, 96)[None]).logits
    assert (shifted[0] - got.logits[1, 20:]).abs().max().item() <= TOL


def test_ours_to_hf_via_save_pretrained(tmp_path, pair, batch):
    _, ours = pair
    ids, labels = batch
    ours.save_pretrained(tmp_path)
    hf2, info = transformers.OpenAIGPTLMHeadModel.from_pretrained(tmp_path, output_loading_info=True)
    assert info["missing_keys"] == [] and info["unexpected_keys"] == [] and info["mismatched_keys"] == []
    with torch.no_grad():
        ref, got = hf2.eval()(ids, labels=labels), ours(ids, labels=labels)
    assert (ref.logits - got.logits).abs().max().item() <= TOL
    assert abs(ref.loss.item() - got.loss.item()) <= TOL
    reloaded = GPT.from_pretrained(tmp_path)
    with torch.no_grad():
        assert torch.equal(reloaded(ids).logits, got.logits)


def test_architecture_facts():
    cfg = GPT1Config.from_preset("gpt1")
    model = GPT(cfg)
    assert model.num_parameters() == cfg.num_parameters() == 116_534_784  # the paper's 116.5M
    assert model.lm_head.weight is model.tokens_embed.weight
    stds = [model.tokens_embed.weight.std().item(), model.h[0].attn.c_attn.weight.std().item()]
    assert all(abs(s - 0.02) < 0.001 for s in stds)
    assert model.h[0].ln_1.weight.eq(1).all() and model.h[0].attn.c_attn.bias.eq(0).all()


def test_resize_token_embeddings_appends_normal_rows():
    torch.manual_seed(0)
    model = GPT(GPT1Config.from_preset("tiny"))
    before = model.tokens_embed.weight.detach().clone()
    model.resize_token_embeddings(40481)  # _start_, _delimiter_, _classify_
    w = model.tokens_embed.weight
    assert w.shape == (40481, 128) and model.config.vocab_size == 40481
    assert torch.equal(w[:40478], before)
    assert model.lm_head.weight is w
    assert w[40478:].abs().max() < 0.2 and w[40478:].std() > 0.005
    out = model(torch.tensor([[40478, 5, 40480]]))
    assert out.logits.shape == (1, 3, 40481)
    with pytest.raises(ValueError, match="drop"):
        model.resize_token_embeddings(100)


def test_too_long_input_is_refused_clearly():
    model = GPT(GPT1Config.from_preset("tiny"))
    with pytest.raises(ValueError, match="longer than the model's context of 128"):
        model(torch.zeros(1, 129, dtype=torch.long))
    with pytest.raises(ValueError, match="empty"):
        model(torch.zeros(1, 0, dtype=torch.long))
    with pytest.raises(ValueError, match="shape"):
        model(torch.zeros(5, dtype=torch.long))


def test_bad_config_values_are_named():
    with pytest.raises(ValueError, match="n_head"):
        GPT1Config(n_embd=100, n_head=12)
    with pytest.raises(ValueError, match="afn"):
        GPT1Config(afn="tanh")
    with pytest.raises(ValueError, match="Unknown preset 'huge'"):
        GPT1Config.from_preset("huge")


def test_training_loss_without_logits_equals_the_full_loss():
    """`return_logits=False` (the Trainer's path) gives the loss of the full logits (the fused kernel: tests/kernels)."""
    model = GPT(GPT1Config.from_preset("tiny")).eval()
    ids = torch.randint(0, 40478, (2, 40))
    out = model(ids, labels=ids, return_logits=False)
    assert out.logits is None and abs(out.loss.item() - model(ids, labels=ids).loss.item()) < 1e-5
