"""Fine-tuning + evaluation end to end (API and CLI) and the CLI's one-line errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from gpt1.cli.verbs import main


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
