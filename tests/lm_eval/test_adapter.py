"""The gpt1 model of lm-eval against references: transformers' log_softmax, `perplexity()`, `gpt1.generate`."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from lm_eval.api.instance import Instance

from gpt1.evaluation.perplexity import perplexity
from gpt1.inference.generate import generate

N = 64  # the fixture model's positions

TEXT = (
    "It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of "
    "foolishness, it was the epoch of belief, it was the epoch of incredulity, it was the season of Light, it was "
    "the season of Darkness, it was the spring of hope, it was the winter of despair, we had everything before "
    "us, we had nothing before us, we were all going direct to Heaven, we were all going direct the other way."
) * 2


def _requests(kind, args):
    return [Instance(kind, {}, a, i) for i, a in enumerate(args)]


def _hf_logprobs(hf, ids):
    with torch.no_grad():
        return F.log_softmax(hf(torch.tensor([ids])).logits[0].float(), -1)


def _greedy_tokens(hf, ids, n):
    ids = list(ids)
    for _ in range(n):
        ids.append(int(_hf_logprobs(hf, ids)[-1].argmax()))
    return ids[-n:]


def test_loglikelihood_equals_transformers_and_knows_greedy(lm, hf):
    g = torch.Generator().manual_seed(0)
    vocab = lm.model.config.vocab_size
    contexts = [torch.randint(0, vocab, (n,), generator=g).tolist() for n in (3, 20, 90)]  # 90: cut from the left
    conts = [_greedy_tokens(hf, contexts[0], 4), torch.randint(0, vocab, (5,), generator=g).tolist(), [7, 8, 9]]
    got = lm._loglikelihood_tokens([(None, c, x) for c, x in zip(contexts, conts)], disable_tqdm=True)
    for ctx, cont, (logprob, greedy) in zip(contexts, conts, got):
        seq = (ctx + cont)[-N:]
        logp = _hf_logprobs(hf, seq)
        start = len(seq) - len(cont)
        target = torch.tensor(seq[start:])
        want = logp[start - 1 : -1].gather(-1, target[:, None]).sum()
        assert logprob == pytest.approx(float(want), abs=1e-4)
        assert greedy == bool((logp[start - 1 : -1].argmax(-1) == target).all())
    assert [greedy for _, greedy in got] == [True, False, False]


def test_one_token_choices_share_their_context_and_equal_transformers(lm, hf):
    g = torch.Generator().manual_seed(2)
    vocab = lm.model.config.vocab_size
    contexts = [torch.randint(0, vocab, (n,), generator=g).tolist() for n in (5, 12, 70)]  # 70: cut from the left
    reqs, want = [], []
    for ctx in contexts:
        logp = _hf_logprobs(hf, ctx[-(N - 1) :])[-1]
        best = int(logp.argmax())
        for token in (best, 11, 12):  # the greedy choice and two others, as a multiple-choice task asks
            reqs.append((None, ctx, [token]))
            want.append((float(logp[token]), token == best))
    got = lm._loglikelihood_tokens(reqs, disable_tqdm=True)
    for (logprob, greedy), (ref, ref_greedy) in zip(got, want):
        assert logprob == pytest.approx(ref, abs=1e-4) and greedy == ref_greedy
    assert sum(greedy for _, greedy in got) == 3


def test_text_requests_split_as_lm_eval_and_empty_context_scores_from_the_second_token(lm, hf):
    tok = lm.tok
    got = lm.loglikelihood(_requests("loglikelihood", [("The cat sat on", " the mat."), ("", "The cat sat.")]), True)
    ctx, whole = tok.encode("The cat sat on"), tok.encode("The cat sat on the mat.")
    assert whole[: len(ctx)] == ctx
    logp = _hf_logprobs(hf, whole)
    want = logp[len(ctx) - 1 : -1].gather(-1, torch.tensor(whole[len(ctx) :])[:, None]).sum()
    assert got[0][0] == pytest.approx(float(want), abs=1e-4)
    ids = tok.encode("The cat sat.")
    logp = _hf_logprobs(hf, ids)
    want = logp[:-1].gather(-1, torch.tensor(ids[1:])[:, None]).sum()  # no token before the text: the first is context
    assert got[1][0] == pytest.approx(float(want), abs=1e-4)


@pytest.mark.parametrize("stride", [None, 64, 13])
def test_rolling_loglikelihood_equals_perplexity_total(lm, tiny, stride):
    model, tok = tiny
    assert len(tok.encode(TEXT)) > 2 * N  # several windows
    if stride is not None:
        lm.stride = stride
    try:
        (total,) = lm.loglikelihood_rolling(_requests("loglikelihood_rolling", [(TEXT,)]), disable_tqdm=True)
    finally:
        lm.stride = N // 2
    ppl = perplexity(model, tok, TEXT, stride=stride, precision="fp32")
    assert total == pytest.approx(-ppl["nll_per_token"] * ppl["scored_tokens"], rel=1e-5)
    assert ppl["scored_tokens"] == len(tok.encode(TEXT)) - 1


def test_rolling_scores_several_texts_independently(lm):
    texts = [TEXT, "A short one.", TEXT[:100]]
    together = lm.loglikelihood_rolling(_requests("loglikelihood_rolling", [(t,) for t in texts]), True)
    alone = [lm.loglikelihood_rolling(_requests("loglikelihood_rolling", [(t,)]), True)[0] for t in texts]
    assert together == pytest.approx(alone, abs=1e-4)


def test_generate_until_is_gpt1_greedy_cut_at_the_stop_string(lm, tiny):
    model, tok = tiny
    prompts = ["The old man said", "Once upon a time there was"]
    greedy = []
    for p in prompts:
        ids = torch.tensor([tok.encode(p)])
        out = generate(model, ids, max_new_tokens=12)
        greedy.append(tok.decode(out[0, ids.shape[1] :].tolist()))
    free = lm.generate_until(_requests("generate_until", [(p, {"max_gen_toks": 12}) for p in prompts]), True)
    assert free == greedy
    stop = greedy[0].split()[2]  # a word in the middle of the first continuation
    cut = lm.generate_until(
        _requests("generate_until", [(p, {"until": [stop], "max_gen_toks": 12}) for p in prompts]), True
    )
    assert cut[0] == greedy[0][: greedy[0].index(stop)]
    assert stop not in cut[1] and greedy[1].startswith(cut[1])


def test_bad_model_args_are_named(tiny_dir):
    from gpt1.lm_eval import GPT1LM

    with pytest.raises(ValueError, match="temperature are not options of the gpt1 model"):
        GPT1LM(pretrained=str(tiny_dir), temperature=1)
    with pytest.raises(ValueError, match="max_length=100 must be in 2..64"):
        GPT1LM(pretrained=str(tiny_dir), max_length=100)
    with pytest.raises(ValueError, match="batch_size='x' is not a number"):
        GPT1LM(pretrained=str(tiny_dir), batch_size="x")
