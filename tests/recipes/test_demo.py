"""`gpt1 demo` end to end on a tiny setting (offline: pyjokes + a BPE trained on it), and the BPE trainer itself."""

from __future__ import annotations

import json

import pytest

from gpt1 import GPT, Tokenizer
from gpt1.recipes.demo import demo_jokes
from gpt1.tokenizer.learn_bpe import train_tokenizer
from gpt1.tokenizer.pretokenize import pretokenize


def test_train_tokenizer_round_trips_and_covers_the_corpus(tmp_path):
    texts = demo_jokes()
    assert len(texts) > 100  # the corpus ships with the pyjokes dependency
    tok = train_tokenizer(texts, 800, special_tokens=["<|endoftext|>"])
    assert len(tok.encoder) <= 800 and tok.special_tokens == {"<|endoftext|>": len(tok.encoder)}
    unk = tok.token_to_id("<unk>")
    for text in texts[:50]:
        ids = tok.encode(text)
        assert unk not in ids  # every character of the corpus is in the learned alphabet
        # The BPE pieces of each word spell the word: merges apply within the original pipeline's words.
        pieces = "".join(tok.tokenize(text)).replace("</w>", " ").split()
        assert pieces == [w for words in pretokenize([text]) for w in words]
    tok.save_pretrained(tmp_path)
    again = Tokenizer.from_pretrained(tmp_path)
    assert again.special_tokens == tok.special_tokens
    assert [again.encode(t) for t in texts[:50]] == [tok.encode(t) for t in texts[:50]]
    with pytest.raises(ValueError, match="vocab_size 1 is too small"):
        train_tokenizer(texts, 1)


def test_pretokenize_matches_gpt1_tokenizer(gpt1_tokenizer):
    """Our pre-tokenisation is the one the real GPT-1 tokenizer runs BPE over."""
    texts = demo_jokes()[:40] + ["Café  déjà-vu -- «quotes» and\nnew lines!!!"]
    for text in texts:
        pieces = "".join(gpt1_tokenizer.tokenize(text)).replace("</w>", " ").split()
        assert pieces == pretokenize([text])[0], text


def test_demo_runs_end_to_end(tmp_path, capsys):
    from gpt1.cli.verbs import main

    out = tmp_path / "demo"
    rc = main(["demo", "--quick", "--out", str(out), "--steps", "12", "--num-jokes", "3"])
    printed = capsys.readouterr().out
    assert rc == 0
    for name in (
        "config.json",
        "model.safetensors",
        "vocab.json",
        "merges.txt",
        "loss.png",
        "metrics.jsonl",
        "samples.jsonl",
        "run_config.json",
    ):
        assert (out / name).exists(), name
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    val = [r["val_loss"] for r in rows if "val_loss" in r]
    assert len(val) >= 2 and val[-1] < val[0]  # the loss falls
    assert "training loss fell from" in printed and printed.count("  JOKE: ") >= 3
    model, tok = GPT.from_pretrained(out), Tokenizer.from_pretrained(out)
    assert model.config.extra["eos_token_id"] == tok.token_to_id("<|endoftext|>") == model.config.vocab_size - 1
