"""Task heads against transformers' OpenAIGPTDoubleHeadsModel, and the properties of the four transformations' heads."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from gpt1 import GPT, GPT1Config
from gpt1.model.heads import (
    _head,
    add_task_head,
    classification_logits,
    finetune_loss,
    multiple_choice_scores,
    sequence_lm_loss,
    similarity_logits,
)


def _model(num_labels: int = 1, seed: int = 0, **kw) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPT1Config.from_preset("tiny", vocab_size=320, num_labels=num_labels, **kw)).eval()


def _batch(B=3, K=2, T=11, lengths=None, vocab=320, seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (B, K, T), generator=g)
    lengths = lengths if lengths is not None else torch.randint(4, T + 1, (B, K), generator=g)
    mask = (torch.arange(T)[None, None, :] < lengths[..., None]).long()
    return ids * mask, mask, lengths - 1


def _hf_double_heads(model: GPT):
    transformers = pytest.importorskip("transformers", reason="transformers (the reference) is not installed")
    from gpt1.checkpoint import ours_to_hf

    c = model.config
    hf_cfg = transformers.OpenAIGPTConfig(
        vocab_size=c.vocab_size,
        n_positions=c.n_positions,
        n_embd=c.n_embd,
        n_layer=c.n_layer,
        n_head=c.n_head,
        afn="gelu",
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        summary_first_dropout=0.0,
    )
    hf = transformers.OpenAIGPTDoubleHeadsModel(hf_cfg).eval()
    state = {
        k.replace("task_head.", "multiple_choice_head.summary."): v for k, v in ours_to_hf(model.state_dict()).items()
    }
    missing, unexpected = hf.load_state_dict(state, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"} | {k for k in missing if k.endswith("attn.bias")}
    hf.tie_weights()
    return hf


def test_multiple_choice_scores_and_lm_loss_match_transformers_double_heads():
    model = _model(num_labels=1)
    with torch.no_grad():
        model.task_head.bias.fill_(0.3)  # a non-zero bias, so a dropped bias would show
    hf = _hf_double_heads(model)
    ids, mask, extract = _batch()
    labels = ids.masked_fill(mask == 0, -100)
    with torch.no_grad():
        ours = multiple_choice_scores(model, ids, extract)
        ref = hf(input_ids=ids, mc_token_ids=extract, labels=labels)
        our_lm = model(ids.reshape(-1, ids.shape[-1]), labels=labels.reshape(-1, ids.shape[-1])).loss
    assert ours.shape == (3, 2)
    torch.testing.assert_close(ours, ref.mc_logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(our_lm, ref.loss, rtol=1e-5, atol=1e-6)
    # The original's per-sequence LM loss, from the reference's LM logits.
    with torch.no_grad():
        hidden = model(ids.reshape(6, -1)).hidden_states
        per_seq = sequence_lm_loss(model, hidden, ids, mask)
    logp = F.log_softmax(ref.logits.reshape(6, ids.shape[-1], -1), -1)
    flat_ids, flat_mask = ids.reshape(6, -1), mask.reshape(6, -1)
    expected = []
    for r in range(6):
        n = int(flat_mask[r].sum())
        nll = -logp[r, torch.arange(n - 1), flat_ids[r, 1:n]]
        expected.append(nll.mean())
    torch.testing.assert_close(per_seq, torch.stack(expected), rtol=1e-5, atol=1e-5)


def test_padding_does_not_change_scores():
    model = _model(num_labels=1)
    ids, mask, extract = _batch(B=1, K=2, T=9, lengths=torch.tensor([[5, 9]]))
    padded = torch.cat([ids, torch.zeros(1, 2, 7, dtype=torch.long)], -1)
    with torch.no_grad():
        torch.testing.assert_close(
            multiple_choice_scores(model, ids, extract),
            multiple_choice_scores(model, padded, extract),
            rtol=1e-5,
            atol=1e-6,
        )


def test_classification_is_the_head_on_the_extract_state():
    model = _model(num_labels=3)
    ids, _, extract = _batch(B=4, K=1)
    with torch.no_grad():
        logits = classification_logits(model, ids[:, 0], extract[:, 0])
        hidden = model(ids[:, 0]).hidden_states
        expected = model.task_head(hidden[torch.arange(4), extract[:, 0]])
    assert logits.shape == (4, 3)
    torch.testing.assert_close(logits, expected)


def test_similarity_is_symmetric_in_the_two_orders():
    model = _model(num_labels=2)
    ids, _, extract = _batch(B=3, K=2)
    with torch.no_grad():
        a = similarity_logits(model, ids, extract)
        b = similarity_logits(model, ids.flip(1), extract.flip(1))
        hidden = model(ids.reshape(6, -1)).hidden_states
        states = hidden[torch.arange(6), extract.reshape(6)].reshape(3, 2, -1)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a, model.task_head(states.sum(1)))


def test_regression_head_gives_one_score_per_pair():
    model = _model(num_labels=1)
    ids, _, extract = _batch(B=3, K=2)
    with torch.no_grad():
        assert similarity_logits(model, ids, extract).shape == (3,)


def test_classifier_dropout_mask_is_shared_across_choices():
    model = _model(num_labels=128, summary_first_dropout=0.5)
    with torch.no_grad():
        model.task_head.weight.copy_(torch.eye(128))
        model.task_head.bias.zero_()
    model.train()
    torch.manual_seed(3)
    out = _head(model, torch.ones(4, 3, 128))
    zero = out == 0
    assert zero.any() and not zero.all()
    assert torch.equal(zero[:, :1].expand_as(zero), zero)  # the same dims dropped for all 3 choices
    assert not torch.equal(zero[0], zero[1])  # but not the same for every example
    assert set(out.unique().tolist()) <= {0.0, 2.0}  # kept units scaled by 1 / (1 - p)


def test_finetune_loss_is_task_plus_lambda_times_mean_sequence_lm():
    model = _model(num_labels=1)
    ids, mask, extract = _batch()
    batch = {"input_ids": ids, "attention_mask": mask, "extract_positions": extract, "targets": torch.tensor([0, 1, 1])}
    with torch.no_grad():
        scores = multiple_choice_scores(model, ids, extract)
        task = F.cross_entropy(scores, batch["targets"])
        lm = sequence_lm_loss(model, model(ids.reshape(6, -1)).hidden_states, ids, mask).mean()
        loss, parts = finetune_loss(model, batch, "multiple_choice", lm_coef=0.5)
        loss0, _ = finetune_loss(model, batch, "multiple_choice", lm_coef=0.0)
    torch.testing.assert_close(loss, task + 0.5 * lm)
    torch.testing.assert_close(loss0, task)
    torch.testing.assert_close(parts["lm_loss"], lm)


def test_add_task_head_and_errors():
    model = _model(num_labels=0)
    with pytest.raises(ValueError, match="no task head"):
        classification_logits(model, torch.zeros(1, 4, dtype=torch.long), torch.tensor([3]))
    add_task_head(model, 2)
    assert model.config.num_labels == 2 and model.task_head.bias.abs().sum() == 0
    with pytest.raises(ValueError, match="extract_positions must lie in 0..3"):
        classification_logits(model, torch.zeros(1, 4, dtype=torch.long), torch.tensor([4]))
    with pytest.raises(ValueError, match="one output"):
        multiple_choice_scores(model, torch.zeros(1, 2, 4, dtype=torch.long), torch.tensor([[3, 3]]))
