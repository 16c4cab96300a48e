"""LM scoring against transformers, the CoLA threshold, and the paper's zero-shot heuristics on literal examples."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gpt1 import GPT, GPT1Config
from gpt1.evaluation.metrics import matthews_corrcoef
from gpt1.evaluation.zero_shot import best_threshold, continuation_logprobs, zero_shot


def test_best_threshold_maximises_mcc():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 80)
    scores = labels + rng.normal(scale=0.8, size=80)
    t = best_threshold(scores, labels)
    brute = max(matthews_corrcoef(labels, (scores > c).astype(int)) for c in np.concatenate([scores, scores - 1e-9]))
    assert matthews_corrcoef(labels, (scores > t).astype(int)) == pytest.approx(brute)


def _lm(seed=0, **kw):
    torch.manual_seed(seed)
    return GPT(GPT1Config.from_preset("tiny", vocab_size=300, n_positions=32, **kw)).eval()


def test_continuation_logprobs_match_transformers():
    transformers = pytest.importorskip("transformers", reason="transformers (the reference) is not installed")
    model = _lm()
    from gpt1.checkpoint import ours_to_hf

    c = model.config
    hf = transformers.OpenAIGPTLMHeadModel(
        transformers.OpenAIGPTConfig(
            vocab_size=c.vocab_size,
            n_positions=c.n_positions,
            n_embd=c.n_embd,
            n_layer=c.n_layer,
            n_head=c.n_head,
        )
    ).eval()
    hf.load_state_dict(ours_to_hf(model.state_dict()), strict=False)
    hf.tie_weights()
    g = torch.Generator().manual_seed(1)
    prefixes = [torch.randint(0, 300, (n,), generator=g).tolist() for n in (3, 10, 40)]  # 40: cut from the left
    conts = [torch.randint(0, 300, (n,), generator=g).tolist() for n in (2, 5, 4)]
    ours = continuation_logprobs(model, prefixes, conts, batch_size=2, precision="fp32")
    for pre, cont, got in zip(prefixes, conts, ours):
        pre = pre[-(32 - len(cont)) :]
        ids = torch.tensor([pre + cont])
        with torch.no_grad():
            logp = F.log_softmax(hf(ids).logits[0], -1)
        ref = logp[len(pre) - 1 : -1].gather(-1, torch.tensor(cont)[:, None]).mean()
        assert got == pytest.approx(float(ref), abs=1e-4)


# ---- zero-shot ---------------------------------------------------------------------------------------------------
def test_zero_shot_heuristics_on_literal_examples(gpt1_tokenizer):
    tok = gpt1_tokenizer
    torch.manual_seed(0)
    model = GPT(GPT1Config.from_preset("tiny")).eval()
    # sst2: P("positive") vs P("negative") after "<text> very".
    sst = [{"text": "a great film", "label": 1}, {"text": "dull and long", "label": 0}]
    res = zero_shot(model, tok, "sst2", sst, precision="fp32")
    pos, neg = tok.encode("positive")[0], tok.encode("negative")[0]
    with torch.no_grad():
        logits = model(torch.tensor([tok.encode("a great film very")])).logits[0, -1]
    assert res["scores"][0] == pytest.approx(float(logits[pos] - logits[neg]), abs=1e-4)
    assert res["predictions"][0] == int(logits[pos] > logits[neg])
    # dprd: each option substituted for "_", the rest of the sentence scored.
    wino = [
        {
            "sentence": "The trophy did not fit in the case because _ was too big.",
            "options": ["the trophy", "the case"],
            "label": 0,
        }
    ]
    res = zero_shot(model, tok, "dprd", wino, precision="fp32")
    expected = continuation_logprobs(
        model,
        [
            tok.encode("The trophy did not fit in the case because the trophy"),
            tok.encode("The trophy did not fit in the case because the case"),
        ],
        [tok.encode(" was too big.")] * 2,
        precision="fp32",
    )
    np.testing.assert_allclose(res["scores"][0], expected, atol=1e-5)
    # rocstories / race: the answer with the higher average log-prob given the context.
    story = [{"context": "Tom was hungry.", "question": "", "choices": ["He ate.", "He flew."], "label": 0}]
    res = zero_shot(model, tok, "rocstories", story)
    assert res["predictions"] == [int(np.argmax(res["scores"][0]))] and "accuracy" in res
    # cola: threshold reported, chosen on the calibration split.
    cola = [{"text": t, "label": y} for t, y in [("The cat sat.", 1), ("Cat the sat.", 0), ("I like tea.", 1)]]
    res = zero_shot(model, tok, "cola", cola, calibration=cola)
    assert "threshold" in res and res["threshold_chosen_on"].startswith("calibration")
    with pytest.raises(ValueError, match="exactly one '_'"):
        zero_shot(model, tok, "dprd", [{"sentence": "no blank", "options": ["a", "b"], "label": 0}])
