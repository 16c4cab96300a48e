"""Causal-LM fine-tuning: padding kept out of the loss, per-batch padding, packing boundaries, template + eos,
clear errors, generation stopping at eos, run dir, resume — checked against transformers' OpenAIGPT where it applies."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from gpt1 import GPT, GPT1Config
from gpt1.data.text import (
    DynamicPaddingSource,
    PackedSource,
    add_eos_token,
    check_template,
    pack_examples,
    pack_rows,
    pad_batch,
    read_texts,
    split_examples,
    tokenize_examples,
)
from gpt1.recipes.finetune_lm import finetune_lm, packed_lm_loss

JOKES = [
    "Why did the chicken cross the road? To get to the other side.",
    "I told my wife she was drawing her eyebrows too high. She looked surprised.",
    "What do you call a fish with no eyes? A fsh.",
    "I'm reading a book about anti-gravity. It's impossible to put down!",
    "Parallel lines have so much in common. It's a shame they'll never meet.",
    "Why don't skeletons fight each other? They don't have the guts.",
    "I used to be a banker, but I lost interest.",
    "Knock knock.",
    "What's orange and sounds like a parrot? A carrot.",
]


def tiny_model(vocab_size: int = 300, seed: int = 0, n_positions: int = 64) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPT1Config(vocab_size=vocab_size, n_positions=n_positions, n_embd=32, n_layer=2, n_head=4)).eval()


def random_examples(n: int, lo: int = 2, hi: int = 20, vocab: int = 300, seed: int = 0) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(lo, hi + 1, (n,), generator=g).tolist()
    return [torch.randint(1, vocab, (k,), generator=g).tolist() for k in lengths]


def token_weighted_loss(model, examples) -> float:
    """Mean next-token loss over all examples, each run alone (no padding at all)."""
    total, count = 0.0, 0
    for e in examples:
        ids = torch.tensor([e])
        if len(e) < 2:
            continue
        loss = model(ids, labels=ids).loss
        total += float(loss) * (len(e) - 1)
        count += len(e) - 1
    return total / count


def write_csv(path: Path, rows: list[str], column: str = "Joke") -> Path:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["ID", column])
        for i, r in enumerate(rows):
            w.writerow([i, r])
    return path


# ---- padding stays out of the loss -------------------------------------------------------------------------
def test_padding_never_contributes_to_the_loss():
    model = tiny_model()
    examples = random_examples(6)
    batch = pad_batch(examples, pad_id=0)
    with torch.no_grad():
        loss = model(**batch).loss
        # Extra padding columns of arbitrary (non-zero) ids must change nothing.
        extra = 7
        junk = torch.randint(1, 300, (len(examples), extra))
        wider = {
            "input_ids": torch.cat([batch["input_ids"], junk], 1),
            "attention_mask": torch.cat([batch["attention_mask"], torch.zeros_like(junk)], 1),
            "labels": torch.cat([batch["labels"], torch.full_like(junk, -100)], 1),
        }
        loss_wider = model(**wider).loss
        reference = token_weighted_loss(model, examples)
    torch.testing.assert_close(loss_wider, loss, rtol=1e-6, atol=1e-6)
    assert float(loss) == pytest.approx(reference, rel=1e-5)


def test_padded_batch_loss_matches_transformers_unpadded(tmp_path):
    transformers = pytest.importorskip("transformers")
    model = tiny_model()
    model.save_pretrained(tmp_path / "m")
    ref = transformers.OpenAIGPTLMHeadModel.from_pretrained(tmp_path / "m").eval()
    examples = random_examples(5, seed=3)
    with torch.no_grad():
        ours = float(model(**pad_batch(examples)).loss)
        total = count = 0
        for e in examples:
            ids = torch.tensor([e])
            total += float(ref(ids, labels=ids).loss) * (len(e) - 1)
            count += len(e) - 1
    assert ours == pytest.approx(total / count, rel=1e-5)


# ---- per-batch dynamic padding -----------------------------------------------------------------------------
def test_dynamic_padding_pads_each_batch_to_its_own_longest():
    examples = random_examples(103, lo=2, hi=60, seed=1)
    for bucket in (False, True):
        src = DynamicPaddingSource(examples, batch_size=8, seed=5, bucket=bucket)
        seen = []
        for _ in range(src.steps_per_epoch):
            b = src.next_batch()
            lengths = b["attention_mask"].sum(1)
            assert b["input_ids"].shape[1] == int(lengths.max())  # no column of pure padding
            assert bool((b["labels"][b["attention_mask"] == 0] == -100).all())
            assert bool((b["labels"][b["attention_mask"] == 1] == b["input_ids"][b["attention_mask"] == 1]).all())
            for row, n in zip(b["input_ids"], lengths):
                seen.append(tuple(row[: int(n)].tolist()))
        assert sorted(seen) == sorted(map(tuple, examples))  # every example exactly once per epoch


def test_bucketing_cuts_padding_and_sources_resume_exactly():
    examples = random_examples(400, lo=2, hi=80, seed=2)

    def pad_share(src):
        pads = total = 0
        for _ in range(src.steps_per_epoch):
            m = src.next_batch()["attention_mask"]
            pads += int((m == 0).sum())
            total += m.numel()
        return pads / total

    assert pad_share(DynamicPaddingSource(examples, 16, bucket=True)) < 0.5 * pad_share(
        DynamicPaddingSource(examples, 16, bucket=False)
    )
    for make in (lambda: DynamicPaddingSource(examples, 16, seed=9), lambda: PackedSource(examples, 4, 128, seed=9)):
        a = make()
        for _ in range(a.steps_per_epoch + 3):  # across an epoch boundary
            a.next_batch()
        b = make()
        b.load_state_dict(json.loads(json.dumps(a.state_dict())))
        for _ in range(5):
            x, y = a.next_batch(), b.next_batch()
            assert all(torch.equal(x[k], y[k]) for k in x)


# ---- packing -----------------------------------------------------------------------------------------------
def test_packing_boundaries():
    examples = [[5, 6, 7], [8, 9], [10, 11, 12, 13], [14]]
    assert pack_examples(examples, 6) == [[0, 1], [2, 3]]
    b = pack_rows([[examples[0], examples[1]], [examples[2], examples[3]]], 6)
    assert b["input_ids"].tolist() == [[5, 6, 7, 8, 9, 0], [10, 11, 12, 13, 14, 0]]
    assert b["segment_ids"].tolist() == [[1, 1, 1, 2, 2, 0], [1, 1, 1, 1, 2, 0]]
    assert b["position_ids"].tolist() == [[0, 1, 2, 0, 1, 0], [0, 1, 2, 3, 0, 0]]
    assert b["attention_mask"].tolist() == [[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 0]]
    # An example's first token is never a target (it would be predicted from the previous example).
    assert b["labels"].tolist() == [[-100, 6, 7, -100, 9, -100], [-100, 11, 12, 13, -100, -100]]
    with pytest.raises(ValueError, match="more than the block of 6"):
        pack_examples([[1] * 7], 6)


def test_packed_loss_equals_each_example_alone():
    """Attention stays inside each example: the packed loss is the token-weighted loss of the examples run alone."""
    model = tiny_model()
    examples = random_examples(30, lo=2, hi=15, seed=4)
    src = PackedSource(examples, batch_size=3, block_size=64, seed=0)
    seen, total, count = [], 0.0, 0
    with torch.no_grad():
        for _ in range(src.steps_per_epoch):
            b = src.next_batch()
            assert b["input_ids"].shape[1] == 64
            loss, n = packed_lm_loss(model, b)
            total += float(loss) * n
            count += n
            for row, seg in zip(b["input_ids"], b["segment_ids"]):
                for k in range(1, int(seg.max()) + 1):
                    seen.append(tuple(row[seg == k].tolist()))
        reference = token_weighted_loss(model, examples)
    assert sorted(seen) == sorted(map(tuple, examples))  # whole examples, each once
    assert total / count == pytest.approx(reference, rel=1e-5)
    # Without the block-diagonal mask (plain causal attention over the block) the loss differs: the check can fail.
    b = pack_rows([examples[:4]], 64)
    with torch.no_grad():
        plain = float(model(b["input_ids"], attention_mask=b["attention_mask"], labels=b["labels"]).loss)
        packed = float(packed_lm_loss(model, b)[0])
    assert plain != pytest.approx(packed, rel=1e-4)


# ---- template, eos, columns ----------------------------------------------------------------------------------
def test_template_and_eos(gpt1_tokenizer):
    import copy

    tok = copy.deepcopy(gpt1_tokenizer)
    model = GPT(GPT1Config.from_preset("tiny", vocab_size=40478))
    eos_id = add_eos_token(tok)
    assert eos_id == 40478 and len(tok) == 40479 and tok.token_to_id("<|endoftext|>") == eos_id
    assert model.config.vocab_size == 40478  # data code leaves the model alone; the recipe grows it
    model.resize_token_embeddings(len(tok))
    assert model.config.vocab_size == 40479 and model.tokens_embed.weight.shape[0] == 40479
    assert model.lm_head.weight is model.tokens_embed.weight
    assert add_eos_token(tok) == eos_id  # idempotent
    examples, truncated = tokenize_examples(tok, ["Knock knock.", "A {brace} joke"], eos_id, "JOKE: {text}")
    assert examples[0] == tok.encode("JOKE: Knock knock.") + [eos_id]
    assert examples[1] == tok.encode("JOKE: A {brace} joke") + [eos_id]
    assert truncated == 0
    assert tok.decode(examples[0]) == "joke : knock knock. <|endoftext|>"
    short, truncated = tokenize_examples(tok, ["one two three four five six"], eos_id, max_length=4)
    assert len(short[0]) == 4 and truncated == 1
    with pytest.raises(ValueError, match="no \\{text\\} slot"):
        check_template("JOKE:")


def test_missing_column_error_lists_columns(tmp_path, capsys):
    """Checked before any model or tokenizer is loaded, so the tokenizer path here need not exist."""
    path = write_csv(tmp_path / "j.csv", JOKES)
    assert read_texts(path, "Joke") == JOKES
    with pytest.raises(ValueError, match=r"no column 'joke'; the columns are: 'ID', 'Joke'"):
        read_texts(path, "joke")
    from gpt1.cli.verbs import main

    rc = main(
        [
            "finetune-lm",
            "--preset",
            "tiny",
            "--tokenizer",
            str(tmp_path),
            "--data",
            str(path),
            "--out",
            str(tmp_path / "run"),
            "--text-column",
            "Jokes",
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and "Traceback" not in "\n".join(err)  # (the other stderr lines are `datasets`' progress)
    assert (
        err[-1].startswith("gpt1 finetune-lm: error:") and "no column 'Jokes'; the columns are: 'ID', 'Joke'" in err[-1]
    )


def test_split_is_seeded_and_disjoint():
    items = list(range(100))
    train, val = split_examples(items, 0.1, seed=3)
    assert len(val) == 10 and sorted(train + val) == items
    assert split_examples(items, 0.1, seed=3) == (train, val)
    with pytest.raises(ValueError, match="--val-fraction 1.5"):
        split_examples(items, 1.5, 0)


# ---- end to end: run dir, generation stopping at eos, resume ----------------------------------------------------
def test_finetune_lm_end_to_end_stops_at_eos(tmp_path, vocab_dir, capsys):
    from gpt1 import Tokenizer
    from gpt1.cli.verbs import main
    from gpt1.inference.generate import generate

    data = write_csv(tmp_path / "one.csv", ["the cat sat on the mat ."] * 24)
    run = tmp_path / "run"
    rc = main(
        [
            "finetune-lm",
            "--preset",
            "tiny",
            "--tokenizer",
            str(vocab_dir),
            "--data",
            str(data),
            "--text-column",
            "Joke",
            "--out",
            str(run),
            "--max-steps",
            "40",
            "--batch-size",
            "8",
            "--lr",
            "3e-3",
            "--warmup-fraction",
            "0",
            "--val-fraction",
            "0.1",
            "--eval-every",
            "20",
            "--num-samples",
            "1",
            "--precision",
            "fp32",
            "--no-progress",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    for name in (
        "config.json",
        "model.safetensors",
        "vocab.json",
        "merges.txt",
        "added_tokens.json",
        "run_config.json",
        "metrics.jsonl",
        "loss.png",
        "samples.jsonl",
        "best/model.safetensors",
    ):
        assert (run / name).exists(), name
    assert any((run / "checkpoints").glob("step_*/trainer_state.json"))
    samples = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]
    assert [s["step"] for s in samples] == [20, 40] and all(s["prompt"] == "JOKE:" for s in samples)
    model, tok = GPT.from_pretrained(run).eval(), Tokenizer.from_pretrained(run)
    eos = tok.token_to_id("<|endoftext|>")
    assert model.config.extra["eos_token_id"] == eos == 40478
    prompt = torch.tensor([tok.encode("JOKE:")])
    out = generate(model, prompt, max_new_tokens=30, eos_token_id=eos, return_dict_in_generate=True)
    new = out.sequences[0, prompt.shape[1] : prompt.shape[1] + int(out.num_generated[0])].tolist()
    assert new == tok.encode("the cat sat on the mat .") + [eos]  # learned the example, then stopped at eos
    capsys.readouterr()
    assert main(["generate", "--model", str(run), "--prompt", "JOKE:", "--greedy", "--max-new-tokens", "30"]) == 0
    printed = capsys.readouterr().out
    assert "the cat sat on the mat." in printed and "mat. the" not in printed


def test_resume_continues_exactly(tmp_path, vocab_dir):
    data = write_csv(tmp_path / "j.csv", JOKES * 3)
    common = dict(
        preset="tiny",
        tokenizer=str(vocab_dir),
        text_column="Joke",
        batch_size=4,
        lr=1e-3,
        warmup_fraction=0.0,
        schedule="constant",
        val_fraction=0.1,
        sample_prompt=None,
        precision="fp32",
        device="cpu",
        progress=False,
        eval_every=3,
        save_every=3,
    )
    finetune_lm(data, tmp_path / "a", max_steps=6, **common)
    finetune_lm(data, tmp_path / "b", max_steps=3, **common)
    r = finetune_lm(data, tmp_path / "b", max_steps=6, resume="auto", **common)
    assert r["step"] == 6
    a, b = GPT.from_pretrained(tmp_path / "a"), GPT.from_pretrained(tmp_path / "b")
    for (k, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        torch.testing.assert_close(x, y, rtol=0, atol=0, msg=k)
