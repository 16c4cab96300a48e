"""`score_tokens` against transformers' OpenAIGPTLMHeadModel on the same random weights (the `ours`/`hf` fixtures)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from gpt1.inference.scoring import score_tokens


def _seqs(lengths, seed=0, vocab=1000):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, vocab, (n,), generator=g).tolist() for n in lengths]


def _reference(hf, seq):
    with torch.no_grad():
        return F.log_softmax(hf(torch.tensor([seq])).logits[0].float(), -1)


def test_logprobs_greedy_and_top_equal_transformers(ours, hf):
    seqs = _seqs([1, 7, 30, 3, 256])
    got = score_tokens(ours, seqs, top_k=5, batch_size=2, precision="fp32")
    assert [s.ids for s in got] == seqs
    for seq, s in zip(seqs, got):
        ref = _reference(hf, seq)
        assert s.logprobs[0] is None and s.greedy[0] is False and s.top[0] == []
        want = ref[:-1].gather(-1, torch.tensor(seq[1:])[:, None])[:, 0]
        assert torch.allclose(torch.tensor(s.logprobs[1:], dtype=torch.float32), want, atol=1e-4)
        assert s.greedy[1:] == (ref[:-1].argmax(-1) == torch.tensor(seq[1:])).tolist()
        for i in range(1, len(seq)):
            ids = [t for t, _ in s.top[i]]
            values = torch.tensor([v for _, v in s.top[i]])
            best = ref[i - 1].topk(5)
            assert ids == best.indices.tolist()
            assert torch.allclose(values, best.values, atol=1e-4)
            assert values.tolist() == sorted(values.tolist(), reverse=True)


def test_batching_and_order_do_not_change_scores(ours):
    seqs = _seqs([5, 40, 12, 40, 2, 90], seed=1)
    alone = [score_tokens(ours, [s], precision="fp32")[0] for s in seqs]
    batched = score_tokens(ours, seqs, batch_size=4, precision="fp32")
    reversed_ = score_tokens(ours, seqs[::-1], batch_size=3, precision="fp32")[::-1]
    for a, b, c in zip(alone, batched, reversed_):
        assert a.top is None and a.ids == b.ids == c.ids
        for x, y, z in zip(a.logprobs[1:], b.logprobs[1:], c.logprobs[1:]):
            assert x == pytest.approx(y, abs=1e-5) and x == pytest.approx(z, abs=1e-5)
        assert a.greedy == b.greedy == c.greedy


def test_too_long_and_empty_sequences_are_refused(ours):
    with pytest.raises(ValueError, match="257 tokens.*256 positions"):
        score_tokens(ours, [[1, 2], list(range(257))])
    with pytest.raises(ValueError, match="sequence 1 to score is empty"):
        score_tokens(ours, [[1, 2], []])
