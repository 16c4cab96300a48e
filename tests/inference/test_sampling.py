"""The sampler: the logits processors' semantics (against transformers' processors), the candidate shortcut of
top-k / top-p against the whole vocabulary, per-row parameters and generators, and the parameter record's checks."""

from __future__ import annotations

import pytest
import torch

from gpt1.inference.sampling import (
    SamplingParams,
    apply_repetition_penalty,
    apply_temperature,
    ban_repeated_ngrams,
    process_logits,
    sample,
    top_k_filter,
    top_p_filter,
    truncated_distribution,
)


# ---- processors ------------------------------------------------------------------------------------------------------
def test_top_k_keeps_exactly_k():
    logits = torch.tensor([[0.1, 3.0, -1.0, 2.0, 0.5]])
    out = top_k_filter(logits, 2)
    assert torch.isfinite(out).tolist() == [[False, True, False, True, False]]
    assert torch.equal(out[torch.isfinite(out)], torch.tensor([3.0, 2.0]))
    assert torch.isfinite(top_k_filter(logits, 99)).all()


@pytest.mark.parametrize(
    "p, kept", [(0.5, 1), (0.79, 2), (0.8, 2), (0.81, 3), (0.95, 3), (0.96, 4), (1e-6, 1), (1.0, 4)]
)
def test_top_p_keeps_the_minimal_nucleus(p, kept):
    probs = torch.tensor([[0.05, 0.5, 0.15, 0.3]])
    out = top_p_filter(probs.log(), p)
    keep = torch.isfinite(out)[0]
    assert int(keep.sum()) == kept
    order = [1, 3, 2, 0]  # most probable first: the kept set is always a prefix of this order
    assert keep[order[:kept]].all() and not keep[order[kept:]].any()


def test_temperature_scales_logits():
    logits = torch.tensor([[1.0, -2.0, 4.0]])
    assert torch.equal(apply_temperature(logits, 0.5), logits * 2)
    assert torch.equal(apply_temperature(logits, 1.0), logits)


def test_repetition_penalty_as_hf_defines_it():
    logits = torch.tensor([[2.0, -2.0, 1.0, -1.0]])
    seen = torch.tensor([[0, 1, 0]])
    assert torch.equal(apply_repetition_penalty(logits, seen, 2.0), torch.tensor([[1.0, -4.0, 1.0, -1.0]]))
    # Padding positions (mask 0) do not count, even when they share an id with nothing real.
    out = apply_repetition_penalty(logits, torch.tensor([[3, 0]]), 2.0, mask=torch.tensor([[0, 1]]))
    assert torch.equal(out, torch.tensor([[1.0, -2.0, 1.0, -1.0]]))


def test_no_repeat_ngram_bans_completions():
    ids = torch.tensor([[1, 2, 3, 1, 2, 4, 1]])
    out = ban_repeated_ngrams(torch.zeros(1, 6), ids, 2)
    assert torch.isinf(out).nonzero()[:, 1].tolist() == [2]  # "1 2" was seen: 2 may not follow 1 again
    out = ban_repeated_ngrams(torch.zeros(1, 6), ids, 3)
    assert torch.isinf(out).sum() == 0  # "2 1" never seen before the last token
    out = ban_repeated_ngrams(torch.zeros(1, 6), torch.tensor([[1, 2, 3, 1, 2]]), 3)
    assert torch.isinf(out).nonzero()[:, 1].tolist() == [3]


def test_processors_match_hf_on_random_scores():
    lp = pytest.importorskip("transformers.generation.logits_process")
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(3, 500, generator=g) * 3
    ids = torch.randint(0, 500, (3, 40), generator=g)
    ids[:, -2:] = ids[:, 5:7]  # make sure the last bigram occurred before
    assert torch.equal(top_k_filter(scores, 17), lp.TopKLogitsWarper(17)(ids, scores))
    for p in (0.3, 0.9):
        assert torch.equal(torch.isfinite(top_p_filter(scores, p)), torch.isfinite(lp.TopPLogitsWarper(p)(ids, scores)))
    assert torch.equal(
        apply_repetition_penalty(scores, ids, 1.3), lp.RepetitionPenaltyLogitsProcessor(1.3)(ids, scores)
    )
    for n in (1, 2, 3):
        assert torch.equal(ban_repeated_ngrams(scores, ids, n), lp.NoRepeatNGramLogitsProcessor(n)(ids, scores.clone()))


# ---- the distribution a row is drawn from ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "temperature,top_k,top_p,penalty",
    [(1.0, 0, 0.9, 1.0), (0.7, 40, 0.95, 1.3), (1.3, 0, 0.5, 1.0), (1.0, 1000, 0.99, 1.2), (0.8, 10, 1.0, 1.0)],
)
def test_distribution_matches_hf_processors(temperature, top_k, top_p, penalty):
    """The candidate shortcut of top-k / top-p gives HF's processors' distribution over the whole vocabulary."""
    lp = pytest.importorskip("transformers.generation.logits_process", reason="transformers is the reference")
    g = torch.Generator().manual_seed(0)
    for scale in (0.5, 3.0, 10.0):  # flat (nucleus beyond the shortcut), peaked, and one-token distributions
        logits = torch.randn(40478, generator=g) * scale
        history = torch.randint(0, 40478, (30,), generator=g)
        p = SamplingParams(
            do_sample=True, temperature=temperature, top_k=top_k, top_p=top_p, repetition_penalty=penalty
        )
        scores = process_logits(logits.view(1, -1), p, history.view(1, -1))[0]
        index, probs = truncated_distribution(scores, p.top_k, p.top_p)
        ours = torch.zeros(40478).index_put_((index,), probs)
        x, ids = logits.view(1, -1).clone(), history.view(1, -1)
        x = lp.RepetitionPenaltyLogitsProcessor(penalty)(ids, x) if penalty != 1.0 else x
        x = lp.TemperatureLogitsWarper(temperature)(ids, x)
        x = lp.TopKLogitsWarper(top_k)(ids, x) if top_k else x
        x = lp.TopPLogitsWarper(top_p)(ids, x) if top_p < 1 else x
        ref = x.softmax(-1)[0]
        assert torch.equal(ours > 0, ref > 0), (scale, int((ours > 0).sum()), int((ref > 0).sum()))
        torch.testing.assert_close(ours, ref, atol=1e-6, rtol=1e-5)


def test_distribution_keeps_ties_with_the_kth_as_top_k_filter_does():
    scores = torch.zeros(1000)
    scores[:3] = 5.0  # three tokens tie for first place: top_k=2 keeps all three
    index, probs = truncated_distribution(scores, top_k=2)
    assert sorted(index.tolist()) == [0, 1, 2] and torch.allclose(probs, torch.full((3,), 1 / 3))
    flat = torch.zeros(1000)  # a tie running past the candidates: the exact path keeps every tied token
    assert truncated_distribution(flat, top_k=2)[0].numel() == 1000
    kept = torch.isfinite(top_k_filter(flat.view(1, -1), 2)).sum()
    assert kept == 1000


def test_top_k_zero_means_off():
    logits = torch.randn(50)
    off, zero = SamplingParams(do_sample=True), SamplingParams(do_sample=True, top_k=0)
    assert zero.top_k is None and zero == off
    assert all(
        torch.equal(a, b)
        for a, b in zip(truncated_distribution(logits, off.top_k), truncated_distribution(logits, zero.top_k))
    )


# ---- the batched sampler ----------------------------------------------------------------------------------------------
def test_each_row_keeps_its_own_parameters_and_generator():
    """Rows with their own records and generators get what each gets alone, whatever else is in the batch."""
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(4, 700, generator=g) * 2
    history = torch.randint(0, 700, (4, 12), generator=g)
    params = [
        SamplingParams(),  # greedy
        SamplingParams(do_sample=True, temperature=0.8, top_k=30, seed=1),
        SamplingParams(do_sample=True, top_p=0.7, repetition_penalty=1.4, seed=2),
        SamplingParams(do_sample=True, temperature=1.3, no_repeat_ngram_size=2, seed=3),
    ]

    def gens():
        return [torch.Generator().manual_seed(b) for b in range(4)]

    together = sample(logits, params, history, generator=gens())
    alone = [int(sample(logits[b : b + 1], params[b], history[b : b + 1], generator=[gens()[b]])) for b in range(4)]
    assert together.tolist() == alone
    assert together[0] == process_logits(logits[:1], params[0], history[:1]).argmax()
    # The same draws again with fresh generators; other seeds give other tokens somewhere.
    assert torch.equal(sample(logits, params, history, generator=gens()), together)


def test_one_shared_generator_draws_the_whole_batch_at_once():
    """Rows sharing one record and one generator over the whole vocabulary: one multinomial call (as `generate`
    has always drawn, so seeded sampling keeps its results)."""
    logits = torch.randn(3, 500, generator=torch.Generator().manual_seed(2))
    p = SamplingParams(do_sample=True, temperature=0.9)
    got = sample(logits, p, generator=torch.Generator().manual_seed(7))
    ref = torch.multinomial((logits / 0.9).softmax(-1), 1, generator=torch.Generator().manual_seed(7)).squeeze(1)
    assert torch.equal(got, ref)


def test_top_k_one_is_greedy():
    logits = torch.randn(5, 300, generator=torch.Generator().manual_seed(3))
    p = SamplingParams(do_sample=True, top_k=1, seed=0)
    assert torch.equal(sample(logits, p, generator=torch.Generator().manual_seed(0)), logits.argmax(-1))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(top_p=0.0), r"top_p=0.0 is outside the accepted range \(0, 1\]"),
        (dict(temperature=float("nan")), r"temperature=nan is invalid"),
        (dict(max_new_tokens=0), r"max_new_tokens=0 .* >= 1"),
        (dict(num_return_sequences=2, do_sample=False), r"num_return_sequences=2 needs do_sample"),
        (dict(num_beams=2, do_sample=True), r"beam sampling"),
        (dict(stop=""), r"stop='' is invalid"),
    ],
)
def test_the_record_is_checked_once_when_made(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SamplingParams(**kwargs)


def test_the_record_normalises_ids_and_strings():
    p = SamplingParams(eos_token_id=7, stop="END")
    assert p.eos_token_id == (7,) and p.stop == ("END",) and p.pad_token_id == 7
    assert SamplingParams(eos_token_id=[3, 4], pad_token_id=0).pad_token_id == 0
    with pytest.raises(ValueError, match=r"eos_token_id=9 is outside the vocabulary \[0, 5\)"):
        SamplingParams(eos_token_id=9).check_vocab(5)
