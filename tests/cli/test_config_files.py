"""Every training verb takes --config FILE: a run's saved run_config.json is its recipe's config dataclass, and
feeding it back gives the same dataclass (and, end to end, the same run); flags override the file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gpt1.cli import recipes
from gpt1.cli.verbs import build_parser, main
from gpt1.recipes.demo import DemoConfig
from gpt1.recipes.finetune import FinetuneConfig, TaskColumns
from gpt1.recipes.finetune_lm import FinetuneLMConfig
from gpt1.recipes.pretrain import PretrainConfig
from gpt1.recipes.reproduce import ReproduceConfig, reproduce_config
from gpt1.training.config import RESOLVED, TrainConfig


def parse(verb: str, *argv: str):
    """The config `gpt1 VERB ARGV...` would run, built exactly as the verb builds it."""
    args = build_parser().parse_args([verb, *argv])
    if verb == "reproduce":
        return recipes.reproduce_config_from_args(args)
    config = {"pretrain": PretrainConfig, "finetune": FinetuneConfig, "finetune-lm": FinetuneLMConfig}
    return recipes.config_from_args(args, config.get(verb, DemoConfig), verb)


def saved(config, path: Path, recipe: str, extra: tuple[str, ...] = ()) -> Path:
    """`config` written as a run writes run_config.json: its fields, and what the run resolved under "resolved"."""
    path.write_text(json.dumps({**config.to_dict(), RESOLVED: {"recipe": recipe, "train": {"lr": 1.0}}}))
    return path


def configs(tmp_path: Path) -> dict:
    """One config per verb, every kind of field set away from its default."""
    out = str(tmp_path / "run")
    return {
        "pretrain": PretrainConfig(
            data=["a.txt", "b.txt"],
            out=out,
            preset="tiny",
            model_overrides={"n_positions": 32, "resid_pdrop": 0.0},
            max_tokens=300_000,
            batch_tokens=1024,
            micro_batch=2,
            lr=3e-3,
            warmup=0.1,
            schedule="linear",
            compile=True,
            progress=False,
            snapshots=True,
            resume="auto",
        ),
        "finetune": FinetuneConfig(
            task="multiple-choice",
            data="mc.jsonl",
            out=out,
            model="some/model",
            epochs=None,
            max_steps=5,
            lm_coef=0.0,
            seed=7,
            columns=TaskColumns(context_column="story", choice_columns=("a", "b"), label_column="gold"),
            precision="fp32",
            num_proc=2,
        ),
        "finetune-lm": FinetuneLMConfig(
            data=["jokes.csv"],
            out=out,
            preset="tiny",
            tokenizer="tok",
            text_column="Joke",
            template="Q: {text}",
            packing=True,
            max_length=64,
            sample_prompt=None,
            top_k=None,
            lr=1e-3,
            device="cpu",
        ),
        "demo": DemoConfig(out=out, quick=True, steps=12, num_jokes=0, lr=2e-3, seed=5, resume="auto"),
        "reproduce": reproduce_config(
            "quick", books="books", glue="glue", tasks=("sst2", "rte"), finetune_lrs=(1e-3, 2e-3), layer_task=""
        ),
    }


@pytest.mark.parametrize("verb", ["pretrain", "finetune", "finetune-lm", "demo", "reproduce"])
def test_saved_config_parses_back_to_the_same_dataclass(tmp_path, verb):
    config = configs(tmp_path)[verb]
    path = saved(config, tmp_path / "run_config.json", verb)
    extra = ["--out", str(tmp_path / "elsewhere")] if verb == "reproduce" else []
    assert parse(verb, "--config", str(path), *extra) == config
    assert type(config).from_dict(json.loads(json.dumps(config.to_dict()))) == config  # the library's own way


def test_flags_override_the_file_and_take_their_exclusive_group(tmp_path):
    config = configs(tmp_path)["finetune-lm"]
    path = saved(config, tmp_path / "run_config.json", "finetune-lm")
    again = parse("finetune-lm", "--config", str(path), "--model", "m", "--lr", "5e-4", "--text-column", "T")
    assert (again.model, again.preset, again.lr, again.text_column) == ("m", None, 5e-4, "T")
    assert again.template == config.template and again.packing  # the rest comes from the file


def test_yaml_with_flag_names_and_nested_or_flat_columns(tmp_path):
    cfg = tmp_path / "ft.yaml"
    cfg.write_text(
        "task: sst2\nmodel: m\nout: " + str(tmp_path / "r") + "\nmax-steps: '10'\nlm_coef: 0\n"
        "text_column: sentence\ncolumns: {label_column: y}\n"
    )
    config = parse("finetune", "--config", str(cfg))
    assert config.max_steps == 10 and config.lm_coef == 0.0
    assert config.columns == TaskColumns(text_column="sentence", label_column="y")
    assert FinetuneConfig.from_flat({"task": "sst2", "model": "m", "text_column": "s"}).columns.text_column == "s"


def test_config_of_another_verb_and_missing_settings_are_refused(tmp_path, capsys):
    path = saved(configs(tmp_path)["demo"], tmp_path / "run_config.json", "demo")
    assert main(["pretrain", "--config", str(path)]) == 2
    assert "holds the settings of a `gpt1 demo` run; use it with gpt1 demo" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse("finetune", "--model", "m")
    assert "the following arguments are required: --task, --out" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse("finetune-lm", "--data", "x.csv", "--out", str(tmp_path / "r"))
    assert "one of the arguments --model --preset is required" in capsys.readouterr().err


def test_defaults_are_written_once():
    """Settings shared with the Trainer take its default and help; the help shows each default."""
    assert PretrainConfig.schedule == TrainConfig.schedule and FinetuneConfig.schedule == "linear"
    assert PretrainConfig.help("weight_decay") == TrainConfig.help("weight_decay")
    assert ReproduceConfig.epochs == FinetuneConfig.epochs
    help_text = " ".join(build_parser().parse_args(["finetune", "--task", "x"])._parser.format_help().split())
    assert "examples per step (default 32)" in help_text and "peak learning rate (default 6.25e-5)" in help_text


def test_a_run_fed_its_own_run_config_runs_again(tmp_path, vocab_dir):
    """finetune-lm end to end: the second run, made from the first's run_config.json alone, trains identically."""
    data = tmp_path / "jokes.csv"
    data.write_text("Joke\n" + "".join(f"the cat sat on mat number {i} .\n" for i in range(24)))
    first = tmp_path / "first"
    args = ["--preset", "tiny", "--tokenizer", str(vocab_dir), "--data", str(data), "--text-column", "Joke"]
    args += ["--out", str(first), "--max-steps", "3", "--batch-size", "4", "--log-every", "1", "--num-samples", "0"]
    assert main(["finetune-lm", *args, "--precision", "fp32", "--device", "cpu", "--no-progress"]) == 0
    saved_config = json.loads((first / "run_config.json").read_text())
    assert saved_config["resolved"]["recipe"] == "finetune-lm" and saved_config["max_steps"] == 3
    second = tmp_path / "second"
    assert main(["finetune-lm", "--config", str(first / "run_config.json"), "--out", str(second)]) == 0
    again = json.loads((second / "run_config.json").read_text())
    assert {**again, "out": None, "resolved": None} == {**saved_config, "out": None, "resolved": None}

    def rows(run):
        return [(r["step"], r["loss"]) for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())]

    assert rows(second) == rows(first) and len(rows(first)) >= 3
