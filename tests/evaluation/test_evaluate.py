"""Metrics against scikit-learn/scipy, LM scoring against transformers, perplexity windows, zero-shot heuristics, and
fine-tuning + evaluation end to end (API and CLI)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gpt1 import GPT, GPT1Config
from gpt1.cli.verbs import main
from gpt1.evaluation.metrics import accuracy, f1_score, matthews_corrcoef, pearson, spearman
from gpt1.evaluation.tasks import best_threshold, continuation_logprobs, perplexity, zero_shot


# ---- metrics -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_match_scikit_learn_and_scipy(seed):
    sk = pytest.importorskip("sklearn.metrics")
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(seed)
    y, p = rng.integers(0, 2, 200), rng.integers(0, 2, 200)
    assert accuracy(y, p) == pytest.approx(sk.accuracy_score(y, p))
    assert f1_score(y, p) == pytest.approx(sk.f1_score(y, p))
    assert matthews_corrcoef(y, p) == pytest.approx(sk.matthews_corrcoef(y, p))
    y3, p3 = rng.integers(0, 3, 200), rng.integers(0, 3, 200)
    assert matthews_corrcoef(y3, p3) == pytest.approx(sk.matthews_corrcoef(y3, p3))
    a = rng.normal(size=300)
    b = a + rng.normal(size=300)
    a_tied, b_tied = np.round(a), np.round(b * 2) / 2  # ties, as STS-B's 0.2 steps give
    assert pearson(a, b) == pytest.approx(stats.pearsonr(a, b)[0])
    assert spearman(a_tied, b_tied) == pytest.approx(stats.spearmanr(a_tied, b_tied)[0])
    assert matthews_corrcoef(y, np.ones_like(y)) == 0.0 == sk.matthews_corrcoef(y, np.ones_like(y))


def test_metric_input_errors():
    with pytest.raises(ValueError, match="same length"):
        accuracy([1, 0], [1])
    with pytest.raises(ValueError, match="at least one"):
        accuracy([], [])


def test_best_threshold_maximises_mcc():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 80)
    scores = labels + rng.normal(scale=0.8, size=80)
    t = best_threshold(scores, labels)
    brute = max(matthews_corrcoef(labels, (scores > c).astype(int)) for c in np.concatenate([scores, scores - 1e-9]))
    assert matthews_corrcoef(labels, (scores > t).astype(int)) == pytest.approx(brute)


# ---- LM scoring and perplexity -----------------------------------------------------------------------------------
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
    cola = [{"text": t, "label": l} for t, l in [("The cat sat.", 1), ("Cat the sat.", 0), ("I like tea.", 1)]]
    res = zero_shot(model, tok, "cola", cola, calibration=cola)
    assert "threshold" in res and res["threshold_chosen_on"].startswith("calibration")
    with pytest.raises(ValueError, match="exactly one '_'"):
        zero_shot(model, tok, "dprd", [{"sentence": "no blank", "options": ["a", "b"], "label": 0}])


# ---- fine-tuning end to end --------------------------------------------------------------------------------------
@pytest.fixture
def toy_task(tmp_path):
    """A classification task a tiny model learns in a few dozen steps: the label is which word the text contains."""
    rng = np.random.default_rng(0)
    fillers = ["the", "a", "house", "tree", "river", "blue", "small", "walks", "sees", "old", "new", "day"]
    rows = ["sentence,label"]
    for i in range(400):
        label = i % 2
        words = list(rng.choice(fillers, 5)) + ["wonderful" if label else "terrible"]
        rng.shuffle(words)
        rows.append(f"{' '.join(words)},{'good' if label else 'bad'}")
    f = tmp_path / "toy.csv"
    f.write_text("\n".join(rows) + "\n")
    return f


def test_finetune_learns_and_evaluate_reports(toy_task, tmp_path, vocab_dir, capsys):
    run = tmp_path / "run"
    argv = [
        "finetune",
        "--task",
        "classification",
        "--preset",
        "tiny",
        "--tokenizer",
        str(vocab_dir),
        "--data",
        str(toy_task),
        "--text-column",
        "sentence",
        "--out",
        str(run),
        "--max-steps",
        "40",
        "--batch-size",
        "16",
        "--lr",
        "1e-3",
        "--warmup-fraction",
        "0.1",
        "--eval-every",
        "20",
        "--log-every",
        "5",
        "--val-fraction",
        "0.2",
        "--no-progress",
        "--precision",
        "fp32",
        "--lm-coef",
        "0",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "best accuracy" in out
    for name in (
        "config.json",
        "model.safetensors",
        "vocab.json",
        "added_tokens.json",
        "metrics.jsonl",
        "loss.png",
        "run_config.json",
        "best/model.safetensors",
        "best/metrics.json",
    ):
        assert (run / name).exists(), name
    best = json.loads((run / "best" / "metrics.json").read_text())
    assert best["accuracy"] >= 0.9  # random guessing gives 0.5
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "accuracy" in r] == [20, 40]
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["gpt1_extra"]["task"]["label_names"] == ["bad", "good"] and cfg["vocab_size"] == 40481

    results = tmp_path / "results.json"
    assert (
        main(
            [
                "evaluate",
                "--model",
                str(run / "best"),
                "--data",
                str(toy_task),
                "--text-column",
                "sentence",
                "--output",
                str(results),
                "--no-progress",
                "--max-examples",
                "100",
            ]
        )
        == 0
    )
    table = capsys.readouterr().out
    assert "accuracy" in table and "val_loss" in table
    res = json.loads(results.read_text())
    assert res["accuracy"] >= 0.9 and len(res["predictions"]) == 100 and set(res["predictions"]) <= {"good", "bad"}

    # Resuming a finished run continues from its last checkpoint; more steps extend it.
    assert (
        main(
            [
                *argv[: argv.index("--max-steps")],
                "--max-steps",
                "42",
                *argv[argv.index("--max-steps") + 2 :],
                "--resume",
                "auto",
            ]
        )
        == 0
    )
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 42


def test_finetune_multiple_choice_with_the_aux_lm_loss(tmp_path, vocab_dir):
    from gpt1 import finetune

    path = tmp_path / "mc.jsonl"
    path.write_text(
        "".join(
            json.dumps({"context": f"story {i} begins", "choices": ["it ends well", "it ends badly"], "label": i % 2})
            + "\n"
            for i in range(24)
        )
    )
    res = finetune(
        "multiple-choice",
        path,
        tmp_path / "mc",
        preset="tiny",
        tokenizer=str(vocab_dir),
        max_steps=3,
        batch_size=8,
        lm_coef=0.5,
        eval_every=3,
        progress=False,
        precision="fp32",
    )
    assert res["step"] == 3 and 0 <= res["accuracy"] <= 1 and math.isfinite(res["loss"])


def test_cli_errors_are_one_line(tmp_path, capsys, vocab_dir):
    assert main(["finetune", "--task", "sst3", "--preset", "tiny", "--data", "x.tsv", "--out", str(tmp_path)]) == 2
    assert "Unknown task 'sst3'" in capsys.readouterr().err
    assert (
        main(
            [
                "finetune",
                "--task",
                "sst2",
                "--preset",
                "tiny",
                "--data",
                "./missing/SST-2",
                "--out",
                str(tmp_path / "r"),
                "--tokenizer",
                str(vocab_dir),
            ]
        )
        == 2
    )
    assert "no such file" in capsys.readouterr().err
