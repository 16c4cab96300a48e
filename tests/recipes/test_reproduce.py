"""`gpt1 reproduce` end to end at a toy budget: every stage, the report, resuming, and the gpt1 scale starting."""

from __future__ import annotations

import json

import pytest

from gpt1.recipes.reproduce import SCALES, reproduce, reproduce_config
from shared_data import require_shared


@pytest.fixture(scope="module")
def data():
    book = require_shared("data", "gutenberg-books", "pg35_the_time_machine.txt")
    glue = require_shared("data", "glue")
    cloze = require_shared("data", "story-cloze", "cloze_test_val__spring2016.csv")
    return book, glue, cloze


@pytest.mark.slow
def test_quick_reproduce_writes_the_report_and_resumes(tmp_path, data):
    book, glue, cloze = data
    cfg = reproduce_config(
        "quick", books=str(book), glue=str(glue), story_cloze=str(cloze), tasks=("sst2", "cola", "rocstories")
    )
    logs: list[str] = []
    report = reproduce(cfg, tmp_path, progress=False, log=logs.append)
    for name in (
        "report.md",
        "report.json",
        "state.json",
        "table5.png",
        "layers.png",
        "zero_shot.png",
        "pretraining.png",
    ):
        assert (tmp_path / name).is_file(), name
    t5 = report["table5"]
    assert set(t5) == {"sst2", "cola", "rocstories"}
    for arms in t5.values():
        assert set(arms) == {"full", "scratch", "no_aux_lm"}
        assert all(a["lr"] in cfg.finetune_lrs for a in arms.values())
    n_layer = report["layers"]["points"][-1]["layers"]
    assert [p["layers"] for p in report["layers"]["points"]] == list(range(n_layer + 1))
    assert set(report["zero_shot"]) == {"0", *(str(s) for s, _ in report["pretraining"]["snapshots"])}
    assert report["pretraining"]["unigram_entropy"] > 0 and report["pretraining"]["val_curve"]
    md = (tmp_path / "report.md").read_text()
    assert "Table 5" in md and "Figure 2 left" in md and "Figure 2 right" in md and "| pretrain |" in md
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["table5"] == json.loads(json.dumps(t5))
    # The splits are disjoint and carved from the training files only.
    for task in t5:
        files = {s: (tmp_path / "tasks" / task).glob(f"{s}.*") for s in ("train", "validation", "test")}
        rows = {
            s: set(next(iter(f)).read_text().splitlines()[(0 if task == "cola" else 1) :]) for s, f in files.items()
        }
        assert not rows["train"] & rows["test"] and not rows["validation"] & rows["test"]
    # A second call finds every unit done and only rebuilds the report.
    logs.clear()
    again = reproduce(cfg, tmp_path, progress=False, log=logs.append)
    assert again["table5"] == report["table5"] and again["wall_seconds_this_call"] < 30
    with pytest.raises(ValueError, match="other settings"):
        reproduce(reproduce_config("quick", books=str(book), glue=str(glue), seed=7), tmp_path, progress=False)


def test_missing_task_data_is_skipped_and_said(tmp_path, data):
    book, glue, _ = data
    cfg = reproduce_config(
        "quick",
        books=str(book),
        glue=str(glue),
        tasks=("rte", "rocstories"),
        layer_task="",
        zero_shot_tasks=(),
        pretrain_tokens=8192,
    )
    logs: list[str] = []
    report = reproduce(cfg, tmp_path, progress=False, log=logs.append)
    assert set(report["table5"]) == {"rte"} and "rocstories" in report["skipped"]
    assert any(line.startswith("skipping rocstories: no --story-cloze file given") for line in logs)


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="unknown scale 'huge'"):
        reproduce_config("huge", books="b")
    with pytest.raises(ValueError, match="exactly one of --books"):
        reproduce_config("quick")
    with pytest.raises(ValueError, match="unknown task"):
        reproduce_config("quick", books="b", tasks=("mnli",))
    with pytest.raises(ValueError, match="unknown reproduce setting"):
        reproduce_config("quick", books="b", learning_rate=1)


class _Stop(Exception):
    pass


@pytest.mark.slow
def test_gpt1_scale_starts_and_pretrains_on_a_cpu(tmp_path, data):
    """The paper's model (12 x 768, 512 positions, lr 2.5e-4) pre-trains two steps on a CPU; the run stops at the
    report of the pre-training stage (the fine-tuning stages are the quick scale's, tested above)."""
    book, glue, _ = data
    assert SCALES["gpt1"]["preset"] == "gpt1"
    cfg = reproduce_config(
        "gpt1",
        books=str(book),
        glue=str(glue),
        tasks=("sst2",),
        vocab_size=2000,
        pretrain_tokens=2048,
        batch_tokens=1024,
        snapshots=1,
        precision="fp32",
    )

    def log(line: str) -> None:
        if line.startswith("pre-training:"):
            raise _Stop(line)

    with pytest.raises(_Stop, match="2,048 tokens in 2 updates"):
        reproduce(cfg, tmp_path, progress=False, log=log)
    saved = json.loads((tmp_path / "pretrain" / "config.json").read_text())
    assert (saved["n_layer"], saved["n_embd"], saved["n_positions"]) == (12, 768, 512)
    run = json.loads((tmp_path / "pretrain" / "run_config.json").read_text())["resolved"]
    assert run["train"]["lr"] == 2.5e-4 and run["global_batch_tokens"] == 1024
    assert json.loads((tmp_path / "state.json").read_text())["units"]["pretrain"]["steps"] == 2
