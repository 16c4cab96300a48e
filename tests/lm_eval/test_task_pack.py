"""The GPT-1 task pack run by lm-eval's own `simple_evaluate` gives what gpt1's zero-shot scoring gives on the same
examples (shared GLUE / Story Cloze data, and small RACE, DPRD and SciTail files written here)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gpt1.evaluation.zero_shot import read_zero_shot, zero_shot
from gpt1.lm_eval.run import run
from shared_data import require_shared

LIMIT = 20

RACE = [
    {
        "article": "Tom lives in a small town near the sea. Every morning he walks his dog along the beach before "
        "school, and every evening he helps his father in the family shop, which sells fish and bread.",
        "questions": ["Where does Tom live?", "What does the family shop sell?", "Tom walks his dog _ ."],
        "options": [
            ["In a big city.", "Near the sea.", "On a farm.", "In the mountains."],
            ["Fish and bread.", "Books.", "Shoes and hats.", "Cars."],
            ["at night", "before school", "after dinner", "on Sundays only"],
        ],
        "answers": ["B", "A", "B"],
    },
    {
        "article": "The library opens at nine. Students may borrow three books for two weeks. Late books cost ten "
        "cents a day. " * 3,
        "questions": ["How many books may a student borrow?"],
        "options": [["One.", "Two.", "Three.", "Ten."]],
        "answers": ["C"],
    },
]
DPRD = [
    ("The trophy would not fit in the suitcase because _ was too big.", "the trophy", "the suitcase", 1),
    ("The man could not lift his son because _ was so weak.", "the man", "the son", 1),
    ("Joan thanked Susan for the help _ had given.", "Joan", "Susan", 2),
    ("The city council refused the demonstrators a permit because _ feared violence.", "the council", "they", 1),
]
SCITAIL = [
    ("Plants make food from sunlight by photosynthesis.", "Photosynthesis makes food.", "entails"),
    ("The moon orbits the earth.", "The sun orbits the moon.", "neutral"),
    ("Water boils at 100 degrees at sea level.", "Water boils.", "entails"),
]


@pytest.fixture(scope="module")
def task_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("taskdata")
    for i, article in enumerate(RACE):
        folder = root / "RACE" / "test" / "middle"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i}.txt").write_text(json.dumps(article))
    lines = ["sentence,option1,option2,answer"] + [f'"{s}",{a},{b},{y}' for s, a, b, y in DPRD]
    (root / "dprd.csv").write_text("\n".join(lines) + "\n")
    (root / "SciTail").mkdir()
    (root / "SciTail" / "dev.tsv").write_text("".join(f"{p}\t{h}\t{y}\n" for p, h, y in SCITAIL))
    return root


def _per_doc(results, task, metric):
    return [s[metric] for s in sorted(results["samples"][task], key=lambda s: s["doc_id"])]


def _zero_shot_correct(tiny, name, examples, **kw):
    model, tok = tiny
    res = zero_shot(model, tok, name, examples, precision="fp32", **kw)
    return res, [float(p == ex["label"]) for p, ex in zip(res["predictions"], examples)]


def test_pack_tasks_equal_gpt1_zero_shot(tiny_dir, tiny, task_files):
    glue = require_shared("data", "glue")
    cloze = require_shared("data", "story-cloze")
    data = {
        "sst2": str(glue / "SST-2"),
        "cola": str(glue / "CoLA"),
        "story_cloze": str(cloze),
        "race": str(task_files / "RACE"),
        "dprd": str(task_files / "dprd.csv"),
        "scitail": str(task_files / "SciTail"),
        "stsb": str(glue / "STS-B"),
    }
    tasks = ["gpt1_sst2", "gpt1_cola", "gpt1_story_cloze", "gpt1_race_middle", "gpt1_dprd", "gpt1_scitail", "gpt1_stsb"]
    results = run(
        str(tiny_dir),
        tasks,
        limit=LIMIT,
        batch_size=8,
        task_data=data,
        model_args={"precision": "fp32"},
        bootstrap_iters=0,
        log_samples=True,
    )
    got = results["results"]

    sst2 = read_zero_shot("sst2", data["sst2"])[:LIMIT]
    ref, correct = _zero_shot_correct(tiny, "sst2", sst2)
    assert _per_doc(results, "gpt1_sst2", "acc") == correct
    assert got["gpt1_sst2"]["acc,none"] == pytest.approx(ref["accuracy"])

    cola = read_zero_shot("cola", data["cola"])[:LIMIT]
    ref, _ = _zero_shot_correct(tiny, "cola", cola)
    assert got["gpt1_cola"]["mcc,none"] == pytest.approx(ref["mcc"])
    assert got["gpt1_cola"]["acc,none"] == pytest.approx(ref["accuracy"])

    stories = read_zero_shot("rocstories", data["story_cloze"], "test")[:LIMIT]
    ref, correct = _zero_shot_correct(tiny, "rocstories", stories)
    assert _per_doc(results, "gpt1_story_cloze", "acc_token") == correct
    assert got["gpt1_story_cloze"]["acc_token,none"] == pytest.approx(ref["accuracy"])

    race = read_zero_shot("race", task_files / "RACE" / "test" / "middle", "test")
    assert len(race) == 4 and got["gpt1_race_middle"]["acc_token,none"] == pytest.approx(
        _zero_shot_correct(tiny, "race", race)[0]["accuracy"]
    )
    assert _per_doc(results, "gpt1_race_middle", "acc_token") == _zero_shot_correct(tiny, "race", race)[1]

    dprd = read_zero_shot("dprd", data["dprd"], "test")
    assert _per_doc(results, "gpt1_dprd", "acc_token") == _zero_shot_correct(tiny, "dprd", dprd)[1]

    assert results["n-samples"]["gpt1_scitail"]["effective"] == len(SCITAIL)
    assert 0 <= got["gpt1_scitail"]["acc,none"] <= 1
    assert -1 <= got["gpt1_stsb"]["pearson,none"] <= 1 and -1 <= got["gpt1_stsb"]["spearman,none"] <= 1
    assert np.isfinite(got["gpt1_stsb"]["pearson,none"])


def test_a_task_without_a_hub_dataset_asks_for_its_file(tiny_dir, monkeypatch):
    monkeypatch.delenv("GPT1_DATA_DPRD", raising=False)
    with pytest.raises(ValueError, match="gpt1_dprd has no public hub dataset: give its file with --task_data dprd="):
        run(str(tiny_dir), ["gpt1_dprd"], limit=2)


def test_data_can_come_from_the_environment(tiny_dir, task_files, monkeypatch):
    monkeypatch.setenv("GPT1_DATA_DPRD", str(task_files / "dprd.csv"))
    results = run(str(tiny_dir), ["gpt1_dprd"], limit=2, bootstrap_iters=0)
    assert results["n-samples"]["gpt1_dprd"]["effective"] == 2


def test_unknown_tasks_name_close_matches(tiny_dir):
    with pytest.raises(ValueError, match=r"Unknown task 'gpt1_sst' \(did you mean gpt1_sst2"):
        run(str(tiny_dir), ["gpt1_sst"])
