"""Task data: special tokens, the four transformations on literal examples, truncation, readers, batching, resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gpt1 import GPT, GPT1Config
from gpt1.data.tasks import get_task, infer_labels, normalize_labels, read_task, split_validation
from gpt1.data.transforms import (
    SpecialIds,
    TaskBatchSource,
    add_special_tokens,
    classification_ids,
    collate,
    encode_examples,
    entailment_ids,
    multiple_choice_ids,
    similarity_ids,
)
from shared_data import require_shared

SP = SpecialIds(start=900, delimiter=901, classify=902)


@pytest.fixture
def tok(vocab_dir):
    """A fresh tokenizer: adding special tokens must not leak into the session-wide one other tests use."""
    from gpt1 import Tokenizer

    return Tokenizer.from_pretrained(vocab_dir)


def test_special_tokens_are_appended_and_never_produced_by_text(tok):
    model = GPT(GPT1Config.from_preset("tiny"))
    before = model.tokens_embed.weight[:5].clone()
    sp = add_special_tokens(tok)
    assert (sp.start, sp.delimiter, sp.classify) == (40478, 40479, 40480) and len(tok) == 40481
    assert model.config.vocab_size == 40478  # data code leaves the model alone; the caller grows it
    model.resize_token_embeddings(len(tok))
    assert model.config.vocab_size == 40481 and model.lm_head.weight is model.tokens_embed.weight
    assert torch.equal(model.tokens_embed.weight[:5], before)
    assert add_special_tokens(tok) == sp  # idempotent
    ids = tok.encode("_start_ premise _delimiter_ hypothesis _classify_")
    assert max(ids) < 40478


def test_transformations_on_a_literal_example():
    a, b = [1, 2, 3], [4, 5]
    assert classification_ids(a, SP, 512) == [900, 1, 2, 3, 902]
    assert entailment_ids(a, b, SP, 512) == [900, 1, 2, 3, 901, 4, 5, 902]
    assert similarity_ids(a, b, SP, 512) == [[900, 1, 2, 3, 901, 4, 5, 902], [900, 4, 5, 901, 1, 2, 3, 902]]
    assert multiple_choice_ids(a, [[7], [8, 9]], SP, 512) == [
        [900, 1, 2, 3, 901, 7, 902],
        [900, 1, 2, 3, 901, 8, 9, 902],
    ]
    assert multiple_choice_ids(a, [[7]], SP, 512, question=[6]) == [[900, 1, 2, 3, 6, 901, 7, 902]]


def test_truncation_follows_the_original_rule():
    long = list(range(1, 100))
    # n_positions 16: each of two segments is cut to 16 // 2 - 2 = 6 tokens (keeping its start), a single one to 14.
    assert entailment_ids(long, long, SP, 16) == [900, *range(1, 7), 901, *range(1, 7), 902]
    assert len(classification_ids(long, SP, 16)) == 16
    for seq in [*similarity_ids(long, long, SP, 16), *multiple_choice_ids(long, [long, [5]], SP, 16, question=long)]:
        assert len(seq) <= 16
    # A question is kept whole at the context's end; the document before it gives way.
    (seq,) = multiple_choice_ids(long, [[5]], SP, 16, question=[70, 71])
    assert seq[:8] == [900, 1, 2, 3, 4, 70, 71, 901]


def test_encode_and_collate_layout(tok):
    sp = add_special_tokens(tok)
    spec = get_task("mrpc")
    data = encode_examples(
        [{"a": "the cat", "b": "a dog sat", "label": 1}, {"a": "hi", "b": "yo", "label": 0}], spec, tok, sp, 512
    )
    cat, dog = tok.encode("the cat"), tok.encode("a dog sat")
    assert data.sequences[0] == [
        [sp.start, *cat, sp.delimiter, *dog, sp.classify],
        [sp.start, *dog, sp.delimiter, *cat, sp.classify],
    ]
    batch = collate([(data.sequences[i], data.targets[i].item()) for i in range(2)])
    T = len(cat) + len(dog) + 3
    assert batch["input_ids"].shape == (2, 2, T)
    assert batch["extract_positions"].tolist()[0] == [T - 1, T - 1]
    assert batch["input_ids"][1, 0, batch["extract_positions"][1, 0]] == sp.classify
    assert batch["attention_mask"][1, 0].sum() == batch["extract_positions"][1, 0] + 1
    assert batch["input_ids"][1, 0, -1] == 0 and batch["targets"].tolist() == [1, 0]


def _tiny_data(n=23):
    spec = get_task("sst2")
    return encode_examples([{"text": f"example {i}", "label": i % 2} for i in range(n)], spec, _FakeTok(), SP, 32)


class _FakeTok:
    def encode_batch(self, texts, num_proc=1, progress=False):
        return [[len(t), *(ord(c) for c in t[-2:])] for t in texts]


def test_batch_source_epochs_are_shuffled_permutations_and_resume_exactly():
    data = _tiny_data()
    src = TaskBatchSource(data, batch_size=5, seed=7)
    assert src.steps_per_epoch == 5
    epoch = [tuple(s) for _ in range(5) for s in src.next_batch()["input_ids"][:, 0].tolist()]
    assert len(set(epoch)) == 23  # every example exactly once per epoch
    first = [src.next_batch() for _ in range(2)]
    state = src.state_dict()
    rest = [src.next_batch() for _ in range(6)]
    again = TaskBatchSource(data, batch_size=5, seed=7)
    again.load_state_dict(state)
    for a, b in zip(rest, [again.next_batch() for _ in range(6)]):
        assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["targets"], b["targets"])
    assert not all(torch.equal(a["input_ids"], b["input_ids"]) for a, b in zip(first, rest[:2]))
    with pytest.raises(ValueError, match="same data"):
        TaskBatchSource(_tiny_data(20), 5).load_state_dict(state)


def test_split_validation_is_seeded_and_disjoint():
    tr, va = split_validation(100, 0.2, seed=3)
    assert len(va) == 20 and not set(tr) & set(va) and len(tr) + len(va) == 100
    assert np.array_equal(va, split_validation(100, 0.2, seed=3)[1])
    with pytest.raises(ValueError, match="between 0 and 1"):
        split_validation(10, 1.5, 0)


@pytest.mark.parametrize(
    "task, parts, n, first",
    [
        ("sst2", ("glue", "SST-2"), 67349, {"text": "hide new secretions from the parental units ", "label": 0}),
        (
            "cola",
            ("glue", "CoLA"),
            8551,
            {"text": "Our friends won't buy this analysis, let alone the next one we propose.", "label": 1},
        ),
        (
            "rte",
            ("glue", "RTE"),
            2490,
            {
                "premise": "No Weapons of Mass Destruction Found in Iraq Yet.",
                "hypothesis": "Weapons of Mass Destruction Found in Iraq.",
                "label": 1,
            },
        ),
        ("snli", ("snli", "validation.tsv"), 9842, None),
        (
            "stsb",
            ("glue", "STS-B"),
            5749,
            {"a": "A plane is taking off.", "b": "An air plane is taking off.", "label": 5.0},
        ),
    ],
)
def test_named_readers_on_the_shared_files(task, parts, n, first):
    path = require_shared("data", *parts)
    examples = read_task(task, path, "train")
    assert len(examples) == n
    if first is not None:
        assert examples[0] == first
    spec = get_task(task)
    labels = {ex["label"] for ex in examples}
    if not spec.regression:
        assert labels == set(range(spec.num_labels))


def test_mrpc_reader_handles_the_bom():
    examples = read_task("mrpc", require_shared("data", "glue", "MRPC"), "train")
    assert len(examples) == 3668 and examples[0]["label"] == 1
    assert examples[0]["a"].startswith("Amrozi accused his brother")


def test_rocstories_reader():
    path = require_shared("data", "story-cloze", "cloze_test_val__spring2016.csv")
    examples = read_task("rocstories", path)
    assert len(examples) == 1871
    assert len(examples[0]["choices"]) == 2 and {ex["label"] for ex in examples} == {0, 1}
    assert sum(ex["label"] == 0 for ex in examples) == 962


def test_generic_classification_with_string_labels(tmp_path):
    f = tmp_path / "reviews.csv"
    f.write_text('review,sentiment\n"good, really",pos\nawful,neg\nfine,pos\n')
    spec = get_task("classification")
    examples = read_task(spec, f, text_column="review", label_column="sentiment")
    spec = infer_labels(spec, examples)
    assert spec.num_labels == 2 and spec.label_names == ("neg", "pos")
    assert [ex["label"] for ex in normalize_labels(spec, examples)] == [1, 0, 1]
    assert examples[0]["text"] == "good, really"
    with pytest.raises(ValueError, match="no column 'text'.*'review'"):
        read_task("classification", f)
    with pytest.raises(ValueError, match="label 'meh' is not one of neg, pos"):
        normalize_labels(spec, [{"text": "x", "label": "meh"}], "f.csv")


def test_generic_multiple_choice_and_similarity_regression(tmp_path):
    f = tmp_path / "mc.jsonl"
    f.write_text(
        '{"ctx": "Sky is", "a": "blue", "b": "green", "ans": 0}\n{"ctx": "Grass is", "a": "red", "b": "green", "ans": 1}\n'
    )
    ex = read_task("multiple-choice", f, context_column="ctx", choice_columns=["a", "b"], label_column="ans")
    assert ex[1]["choices"] == ["red", "green"] and ex[1]["label"] == 1
    with pytest.raises(ValueError, match="answer index 5 is outside 0..1"):
        normalize_labels(get_task("multiple-choice"), [{"context": "c", "choices": ["a", "b"], "label": 5}])
    g = tmp_path / "sim.csv"
    g.write_text("text,text_pair,label\na,b,0.5\nc,d,3.2\n")
    spec = infer_labels(get_task("similarity"), read_task("similarity", g))
    assert spec.regression and spec.metrics == ("pearson", "spearman")


def test_unknown_task_and_missing_file_errors():
    with pytest.raises(ValueError, match="Unknown task 'sst3'; choose one of: rocstories, sst2"):
        get_task("sst3")
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_task("sst2", "./nope/train.tsv")
