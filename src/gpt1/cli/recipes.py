"""The training verbs: pretrain, finetune, finetune-lm, demo, reproduce.

Each one's options are generated from its recipe's config dataclass (`gpt1.cli.parsers`), every one takes
`--config FILE` under its flags, and each runs the recipe on the resulting config and prints the run's one-line
outcome. A run's `RUN/run_config.json` is that config: `gpt1 VERB --config RUN/run_config.json` runs it again.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from gpt1.cli.checks import UserError, check_run_args
from gpt1.cli.parsers import add_config_option, add_settings, settings_from_args
from gpt1.recipes.demo import DemoConfig, run_demo
from gpt1.recipes.finetune import FinetuneConfig, run_finetune
from gpt1.recipes.finetune_lm import FinetuneLMConfig, run_finetune_lm
from gpt1.recipes.pretrain import PretrainConfig, run_pretrain
from gpt1.recipes.reproduce import SCALES, ReproduceConfig, reproduce, reproduce_config
from gpt1.training.config import show_number
from gpt1.training.trackers import check_trackers


def _add(sub, verb: str, config: type, help: str, description: str) -> argparse.ArgumentParser:
    """The verb's parser: one option per setting of `config`, and --config."""
    p = sub.add_parser(verb, argument_default=argparse.SUPPRESS, help=help, description=description)
    p.set_defaults(_parser=p)  # the command needs its own parser for errors and config-file types
    add_settings(p, config)
    add_config_option(p, config)
    return p


def config_from_args(args: argparse.Namespace, config: type, verb: str) -> Any:
    """The verb's config: --config file, flags on top, the checks every training verb makes before loading
    anything (preset, run dir, device, lr), then the dataclass's own."""
    settings = settings_from_args(args, args._parser, config, verb)
    fields = {f.name: f.default for f in config.flat_fields()}

    def get(name: str) -> Any:
        return settings.get(name, fields.get(name))

    check_run_args(preset=get("preset"), model=get("model"), out=get("out"), device=get("device"), lr=get("lr"))
    check_trackers(get("logger"))  # a tracker's missing package, before any data is read
    return config.from_flat(settings)


def report_run(verb: str, result: dict, summary: str) -> None:
    """Print a training verb's one-line outcome; after Ctrl-C, say how to resume and exit as interrupted."""
    print(f"{'interrupted' if result['interrupted'] else 'done'}: {summary}")
    if result["interrupted"]:
        print(f"resume with: gpt1 {verb} ... --out {result['run_dir']} --resume auto", file=sys.stderr)
        raise KeyboardInterrupt


# ---- pretrain -------------------------------------------------------------------------------------------------------
def add_pretrain(sub) -> None:
    _add(
        sub,
        "pretrain",
        PretrainConfig,
        help="pre-train a GPT on unlabelled text (paper stage 1); flags override --config",
        description="Pre-train a GPT language model. Settings come from defaults, then --config (YAML/JSON), then "
        "flags; the settings are saved in RUN_DIR/run_config.json.",
    )


def cmd_pretrain(args) -> None:
    config = config_from_args(args, PretrainConfig, "pretrain")
    if config.devices > 1 and "WORLD_SIZE" not in os.environ:
        return _launch_torchrun(config)
    result = run_pretrain(config)
    if int(os.environ.get("RANK", 0)) != 0:
        return
    parts = [f"step {result['step']}", f"{result['tokens']:,} tokens"]
    for key, fmt in (("loss", ".4f"), ("val_loss", ".4f"), ("val_ppl", ".2f"), ("tokens_per_s", ",.0f")):
        if result.get(key) is not None:
            parts.append(f"{key} {result[key]:{fmt}}")
    report_run("pretrain", result, f"{', '.join(parts)}; run dir {result['run_dir']}")


def _launch_torchrun(config: PretrainConfig) -> None:
    """Run `gpt1 pretrain` in `config.devices` processes under torchrun, after preparing the data once here."""
    import subprocess

    import torch

    from gpt1.recipes.pretrain import _load_tokenizer, prepare_data

    devices = config.devices
    on_gpu = torch.cuda.is_available() and config.device in ("auto", "cuda")
    if on_gpu and devices > torch.cuda.device_count():
        raise UserError(f"--devices {devices} is more than the {torch.cuda.device_count()} GPUs visible here.")
    prepare_data(config, _load_tokenizer(config))  # once, before the workers start: they reuse the shards
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    launch = out / "launch_config.json"
    launch.write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    env = dict(os.environ)
    if not on_gpu:  # split this machine's cores between the CPU processes
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // devices)))
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={devices}",
        "-m",
        "gpt1",
        "pretrain",
        "--config",
        str(launch),
    ]
    print("launching: " + " ".join(cmd), flush=True)
    rc = subprocess.call(cmd, env=env)
    if rc:
        raise UserError(f"torchrun exited with code {rc}; see the messages above.")


# ---- finetune -------------------------------------------------------------------------------------------------------
def add_finetune(sub) -> None:
    _add(
        sub,
        "finetune",
        FinetuneConfig,
        help="fine-tune on a task with the paper's input transformations and auxiliary LM loss (stage 2)",
        description="Discriminative fine-tuning (paper §3.2-3.3). Defaults are the paper's: "
        f"lr {show_number(FinetuneConfig.lr)}, batch {FinetuneConfig.batch_size}, {FinetuneConfig.epochs:g} epochs, "
        f"{100 * FinetuneConfig.warmup_fraction:g}% linear warmup then linear decay, classifier dropout "
        f"{FinetuneConfig.clf_dropout:g}, --lm-coef {FinetuneConfig.lm_coef:g}.",
    )


def cmd_finetune(args) -> None:
    result = run_finetune(config_from_args(args, FinetuneConfig, "finetune"))
    main = result["main_metric"]
    last = f"{main} {result[main]:.4f}" if result.get(main) is not None else ""
    best = f", best {main} {result['best']:.4f} (in {result['run_dir']}/best)" if result.get("best") is not None else ""
    report_run("finetune", result, f"step {result['step']}, {last}{best}; validation: {result['validation']}")


# ---- finetune-lm ----------------------------------------------------------------------------------------------------
def add_finetune_lm(sub) -> None:
    _add(
        sub,
        "finetune-lm",
        FinetuneLMConfig,
        help="causal-LM fine-tuning on a text column (e.g. jokes as 'JOKE: <joke><|endoftext|>')",
        description="Fine-tune a causal LM on one text column. The end-of-text token is added as a real vocabulary "
        "entry; padding is kept out of the loss and attention; each batch pads only to its own longest "
        "example (or --packing fills whole blocks, attention kept inside each example).",
    )


def cmd_finetune_lm(args) -> None:
    result = run_finetune_lm(config_from_args(args, FinetuneLMConfig, "finetune-lm"))
    val = f", val_loss {result['val_loss']:.4f}" if result.get("val_loss") is not None else ""
    report_run(
        "finetune-lm",
        result,
        f"step {result['step']}{val}; run dir {result['run_dir']} (eos id {result['eos_token_id']})",
    )


# ---- demo -----------------------------------------------------------------------------------------------------------
def add_demo(sub) -> None:
    _add(
        sub,
        "demo",
        DemoConfig,
        help="offline: train a small GPT-1 on pyjokes' jokes and print new jokes (minutes, CPU)",
        description="Learn a small BPE on the jokes of the pyjokes package, train a GPT-1-architecture "
        "model on them (offline, a few minutes on a CPU), show the loss falling and print "
        "new jokes sampled from the best validation step. Running it again replaces the "
        "earlier demo run in --out (it says so); --resume auto continues it instead.",
    )


def cmd_demo(args) -> None:
    config = config_from_args(args, DemoConfig, "demo")
    result = run_demo(config)
    if result["interrupted"]:  # as finetune-lm does: say so, say how to continue, exit 130
        again = " ".join(
            f"{flag} {value}"
            for flag, value in (
                ("--model", config.model),
                ("--steps", config.steps),
                ("--lr", config.lr),
                ("--seed", config.seed),
            )
            if value is not None and not (flag == "--seed" and value == DemoConfig.seed)
        )
        print(f"interrupted at step {result['step']}; the checkpoint is in {result['run_dir']}")
        print(
            f"resume with: gpt1 demo --out {result['run_dir']}{' --quick' if config.quick else ''}"
            f"{' ' + again if again else ''} --resume auto",
            file=sys.stderr,
        )
        raise KeyboardInterrupt


# ---- reproduce ------------------------------------------------------------------------------------------------------
def add_reproduce(sub) -> None:
    p = sub.add_parser(
        "reproduce",
        argument_default=argparse.SUPPRESS,
        help="the paper's analysis at a budget: pre-train, then Table 5's ablations and Figure 2's curves",
        description="Pre-train on books (or take --model), fine-tune on every task given with and without "
        "pre-training and the auxiliary LM loss, transfer 0..L layers, track the zero-shot heuristics "
        "over pre-training, and write RUN/report.md, report.json and figures. Run the same command again "
        "to continue an interrupted run. --scale default takes about an hour on a 2-core CPU; quick "
        "takes seconds; gpt1 is the paper's model and recipe (a GPU job).",
    )
    p.set_defaults(_parser=p)
    p.add_argument("--out", required=True, help="the run dir")
    p.add_argument(
        "--scale", choices=list(SCALES), help="a set of sizes and budgets (default: about an hour on a 2-core CPU)"
    )
    add_settings(p, ReproduceConfig)
    add_config_option(p, ReproduceConfig)
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")


def reproduce_config_from_args(args: argparse.Namespace) -> ReproduceConfig:
    """The scale's settings, then the --config file's, then the flags."""
    settings = settings_from_args(args, args._parser, ReproduceConfig, "reproduce", extra=("scale",))
    check_trackers(settings.get("logger"))
    return reproduce_config(settings.pop("scale", "default"), **settings)


def cmd_reproduce(args) -> None:
    config = reproduce_config_from_args(args)
    try:
        report = reproduce(config, args.out, progress=getattr(args, "progress", True))
    except KeyboardInterrupt:
        print(f"to continue, run the same command again (it resumes from {args.out}/state.json)", file=sys.stderr)
        raise
    t5 = report["table5"]
    gaps = ", ".join(f"{t} {100 * (v['full']['test'] - v['scratch']['test']):+.1f}" for t, v in t5.items())
    print(f"done: pre-trained minus from-scratch (test points): {gaps}; report {Path(args.out) / 'report.md'}")
