"""`gpt1 reproduce`: the paper's analysis of what pre-training buys (Table 5, Figure 2), at a budget, in one command.

1. Pre-train a GPT-1-architecture model on a folder of books (a learned GPT-1-style BPE, snapshots of the weights
   along the way), or take a given pre-trained model.
2. Carve train / validation / test splits (seeded, disjoint) from each task's file that is given.
3. Fine-tune with the paper's recipe (linear warmup over 0.2% then linear decay, batch 32, 3 epochs, λ = 0.5) for
   Table 5's rows: pre-trained with the auxiliary LM loss, the same network from random weights, and pre-trained
   without the auxiliary LM loss (λ = 0). Each row picks its peak lr from the same small sweep by validation score;
   the test split is scored once, with the best validation checkpoint of the chosen lr.
4. Figure 2 left: one task fine-tuned from models whose first k blocks (k = 0..L, embeddings always) come from
   pre-training and whose other blocks are re-initialised.
5. Figure 2 right: the §5 zero-shot heuristics on each task's test split for every pre-training snapshot,
   normalised between chance (0) and the best fine-tuned test score (1).

Everything lands in the run dir: `report.md`, `report.json` (every number and setting), the figures as PNG, and
`state.json`, which makes a re-run continue where the last one stopped (pre-training resumes exactly; a fine-tuning
run cut short starts again).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from gpt1.recipes.finetune import PAPER_LR, FinetuneConfig
from gpt1.training.config import (
    RESOLVED,
    Config,
    TrainConfig,
    float_list,
    int_like,
    like,
    name_list,
    setting,
)
from gpt1.training.state import write_json

logger = logging.getLogger(__name__)

# Where each task's file is found under --glue (GLUE's own folder names), and the chance level of its main metric.
GLUE_TASKS = {"sst2": "SST-2", "cola": "CoLA", "mrpc": "MRPC", "rte": "RTE", "stsb": "STS-B"}
TASK_ORDER = ("sst2", "cola", "mrpc", "rte", "stsb", "rocstories")
CHANCE = {"sst2": 0.5, "cola": 0.0, "rocstories": 0.5}  # accuracy of a coin flip; MCC 0 for CoLA
ZERO_SHOT_METRIC = {"sst2": "accuracy", "cola": "mcc", "rocstories": "accuracy"}


@dataclass(kw_only=True)
class ReproduceConfig(Config):
    """Every setting of a reproduce run; `SCALES` names three sets of them and flags override single fields."""

    label: ClassVar[str] = "reproduce"

    books: str | None = setting(
        None, "folder of text files to pre-train on (e.g. the shared Gutenberg books)", exclusive="source"
    )
    model: str | None = setting(
        None, "a pre-trained model instead of pre-training (dir or hub id; one snapshot)", exclusive="source"
    )
    tokenizer: str | None = setting(None, "with --books: this tokenizer instead of learning a BPE on the books")
    glue: str | None = setting(None, "folder with GLUE's task folders (SST-2, CoLA, MRPC, RTE, STS-B; train.tsv each)")
    story_cloze: str | None = setting(None, "the Story Cloze CSV (cloze_test_val__spring2016.csv)")
    tasks: tuple[str, ...] = setting(TASK_ORDER, "tasks to run, comma-separated", type=name_list)
    # pre-training
    preset: str = setting("mini", "model preset to pre-train")
    model_overrides: dict = setting(factory=dict, help="GPT1Config fields on top of the preset", cli=False)
    vocab_size: int = setting(8000, "BPE entries learned on the books")
    pretrain_tokens: int = setting(16_000_000, "pre-training budget in tokens", type=int_like)
    batch_tokens: int = setting(4096, "pre-training batch in tokens", type=int_like)
    pretrain_lr: float | None = setting(None, "pre-training peak lr (default: the preset's, config.SCRATCH_LR)")
    pretrain_warmup: int | None = setting(None, "pre-training warmup steps (default: the preset's)")
    snapshots: int = setting(
        6, "weights kept at this many evenly spaced points of pre-training (Figure 2 right's zero-shot curves)"
    )
    # fine-tuning
    finetune_lrs: tuple[float, ...] = setting((PAPER_LR, 2.5e-4, 1e-3), "fine-tuning lr sweep", type=float_list)
    epochs: float = like(FinetuneConfig, "epochs", help="fine-tuning epochs")
    batch_size: int = like(FinetuneConfig, "batch_size", help="fine-tuning examples per step")
    lm_coef: float = like(FinetuneConfig, "lm_coef")
    max_train: int = setting(2000, "training examples per task (the rest of the file is not used)")
    val_examples: int = setting(500, "validation examples carved from each task's file")
    test_examples: int = setting(1000, "test examples carved from each task's file")
    layer_task: str | None = setting("sst2", "task of the layers-transferred curve, Figure 2 left ('' = skip it)")
    zero_shot_tasks: tuple[str, ...] = setting(
        ("sst2", "cola", "rocstories"), "tasks of the zero-shot curves, comma-separated", type=name_list
    )
    max_steps: int | None = setting(None, "cap on every fine-tuning run's steps (toy runs)")
    seed: int = like(TrainConfig, "seed", help="seed of splits, weights and data order")
    precision: str = like(TrainConfig, "precision")
    device: str = like(TrainConfig, "device")
    logger: tuple[str, ...] = like(
        TrainConfig,
        "logger",
        help="an experiment tracker that gets every training run (each its own tracker run, under that run's "
        "logs/): tensorboard, wandb, mlflow, trackio; repeat the flag for several",
    )

    def __post_init__(self) -> None:
        self.tasks = tuple(self.tasks)
        self.logger = (self.logger,) if isinstance(self.logger, str) else tuple(self.logger)
        self.finetune_lrs = tuple(float(x) for x in self.finetune_lrs)
        self.zero_shot_tasks = tuple(self.zero_shot_tasks)
        unknown = [
            t
            for t in (*self.tasks, *self.zero_shot_tasks, *([self.layer_task] if self.layer_task else []))
            if t not in TASK_ORDER
        ]
        if unknown:
            raise ValueError(f"unknown task(s) {', '.join(unknown)}; choose from {', '.join(TASK_ORDER)}.")
        if (self.books is None) == (self.model is None):
            raise ValueError("give exactly one of --books (pre-train on them) and --model (a pre-trained model).")
        for name in (
            "pretrain_tokens",
            "batch_tokens",
            "snapshots",
            "batch_size",
            "max_train",
            "val_examples",
            "test_examples",
            "vocab_size",
        ):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name}={getattr(self, name)!r} must be >= 1.")
        if not self.finetune_lrs or min(self.finetune_lrs) <= 0:
            raise ValueError(f"finetune_lrs={self.finetune_lrs!r} must be one or more positive learning rates.")


SCALES: dict[str, dict[str, Any]] = {
    # about an hour on a 2-core CPU: a 4-layer model, 16M tokens of books, six tasks, a three-lr sweep
    "default": {},
    # seconds: a toy run of every stage, for tests and a first look
    "quick": dict(
        preset="tiny",
        model_overrides={"n_positions": 64, "n_embd": 64, "n_head": 2},
        vocab_size=600,
        pretrain_tokens=40_000,
        batch_tokens=1024,
        snapshots=2,
        finetune_lrs=(1e-3,),
        max_train=64,
        val_examples=32,
        test_examples=32,
        epochs=1.0,
    ),
    # the paper's model and recipe (a GPU job: 12 layers x 768, 512 positions, 64 x 512-token batches, 40k BPE)
    "gpt1": dict(
        preset="gpt1",
        vocab_size=40000,
        pretrain_tokens=1_000_000_000,
        batch_tokens=32768,
        snapshots=8,
        finetune_lrs=(PAPER_LR,),
        max_train=100_000,
        val_examples=2000,
        test_examples=5000,
    ),
}


def reproduce_config(scale: str = "default", **overrides: Any) -> ReproduceConfig:
    """The settings of `scale` with `overrides` on top (None values are ignored)."""
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; choose one of {', '.join(SCALES)}.")
    known = {f.name for f in dataclasses.fields(ReproduceConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown reproduce setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}.")
    return ReproduceConfig(**{**SCALES[scale], **{k: v for k, v in overrides.items() if v is not None}})


# ---- the run's bookkeeping -------------------------------------------------------------------------------------
class RunState:
    """`state.json`: the result of every finished unit of work, so a re-run skips it."""

    def __init__(self, out: Path, config: ReproduceConfig) -> None:
        self.path = out / "state.json"
        saved = json.loads(self.path.read_text()) if self.path.exists() else None
        self.data: dict[str, Any] = saved or {"config": config.to_dict(), "units": {}}
        if saved is not None and _results_settings(saved["config"]) != _results_settings(config.to_dict()):
            raise ValueError(
                f"{out} holds a reproduce run with other settings; resume it with the same ones "
                "or choose another --out."
            )

    def run(self, name: str, fn: Callable[..., dict], *args: Any) -> dict:
        """`fn(*args)`, or its result saved by an earlier call under `name`."""
        units = self.data["units"]
        if name in units:
            return units[name]
        t0 = time.perf_counter()
        result = fn(*args)
        result["seconds"] = round(time.perf_counter() - t0, 1)
        units[name] = result
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=2) + "\n")
        os.replace(tmp, self.path)
        return result


def _results_settings(settings: dict) -> dict:
    """The settings that shape the results (all but where the metrics are also sent), JSON-normalised."""
    return {k: v for k, v in json.loads(json.dumps(settings)).items() if k != "logger"}


# ---- the recipe ---------------------------------------------------------------------------------------------------
def reproduce(
    config: ReproduceConfig, out: str | Path, *, progress: bool = True, log: Callable[[str], None] | None = None
) -> dict:
    """Run (or continue) the whole analysis in `out`; returns the report dict (also in `out/report.json`).

    Each stage's outcome goes to `log` (default: this module's logger, which the CLI shows)."""
    log = log or logger.info
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    state = RunState(out, config)
    write_json(out / "run_config.json", {**config.to_dict(), RESOLVED: {"recipe": "reproduce"}})
    t_start = time.perf_counter()
    tasks, skipped = carve_tasks(config, out / "tasks")
    for name, why in skipped.items():
        log(f"skipping {name}: {why}")
    if not tasks:
        raise ValueError("no task data was given (--glue DIR and/or --story-cloze FILE); nothing to fine-tune on.")
    pre = state.run("pretrain", _pretrain, config, out, progress)
    log(f"pre-training: {pre['summary']}")
    snapshots = [(int(s), p) for s, p in pre["snapshots"]]
    final = snapshots[-1][1]
    scratch = state.run("scratch_init", _as_path, _scratch_model, final, out / "init" / "scratch", config.seed)

    runs: dict[str, dict] = {}
    plan = []  # (unit name, task, init dir, lr, lm_coef)
    for task in tasks:
        for arm, init, coef in (
            ("full", final, config.lm_coef),
            ("scratch", scratch["path"], config.lm_coef),
            ("no_aux_lm", final, 0.0),
        ):
            for lr in config.finetune_lrs:
                plan.append((f"ft/{task}/{arm}/lr{lr:g}", task, init, lr, coef))
    for i, (name, task, init, lr, coef) in enumerate(plan, 1):
        runs[name] = state.run(name, _finetune, config, tasks[task], task, init, lr, coef, out / name, progress)
        r = runs[name]
        log(f"[{i}/{len(plan)}] {name}: val {r['val']:.4f}, test {r['test']:.4f} ({r['seconds']:.0f}s)")
    table5 = {
        task: {arm: _pick(runs, task, arm, config.finetune_lrs) for arm in ("full", "scratch", "no_aux_lm")}
        for task in tasks
    }

    layers: dict[str, Any] = {}
    if config.layer_task and config.layer_task in tasks:
        task = config.layer_task
        lr = table5[task]["full"]["lr"]
        n_layer = json.loads((Path(final) / "config.json").read_text())["n_layer"]
        points = []
        for k in range(n_layer + 1):
            if k == n_layer:
                r = table5[task]["full"]
            else:
                name = f"layers/{task}/k{k}"
                init = state.run(
                    f"init/k{k}", _as_path, _transfer_layers, final, k, out / "init" / f"k{k}", config.seed
                )
                r = state.run(
                    name, _finetune, config, tasks[task], task, init["path"], lr, config.lm_coef, out / name, progress
                )
                shutil.rmtree(init["path"], ignore_errors=True)  # a whole model (470 MB at the gpt1 scale), now used
                log(f"layers transferred {k}/{n_layer}: val {r['val']:.4f}, test {r['test']:.4f} ({r['seconds']:.0f}s)")
            points.append({"layers": k, "val": r["val"], "test": r["test"]})
        layers = {"task": task, "lr": lr, "points": points, "scratch_test": table5[task]["scratch"]["test"]}

    zero_shot: dict[str, Any] = {}
    zs_tasks = [t for t in config.zero_shot_tasks if t in tasks]
    if zs_tasks:
        steps = [(0, scratch["path"])] + [s for s in snapshots if s[0] > 0]
        for step, path in steps:
            zero_shot[str(step)] = state.run(f"zero_shot/{step}", _zero_shot, path, tasks, zs_tasks, config)
            log(
                f"zero-shot after {step} updates: "
                + ", ".join(f"{t} {v:.3f}" for t, v in zero_shot[str(step)].items() if t != "seconds")
            )
    report = build_report(
        config, pre, table5, runs, layers, zero_shot, tasks, skipped, state, time.perf_counter() - t_start
    )
    write_report(report, out)
    log(f"report: {out / 'report.md'}")
    return report


def _as_path(make: Callable[..., str], *args: Any) -> dict:
    """A unit of work that makes a model dir, recorded as {"path": dir}."""
    return {"path": make(*args)}


def _pick(runs: dict, task: str, arm: str, lrs) -> dict:
    """The lr of the sweep with the best validation score, and that run's test score."""
    cands = [(runs[f"ft/{task}/{arm}/lr{lr:g}"], lr) for lr in lrs]
    best, lr = max(cands, key=lambda c: (c[0]["val"], -c[1]))
    return {
        "lr": lr,
        "val": best["val"],
        "test": best["test"],
        "metric": best["metric"],
        "sweep": {f"{lr:g}": r["val"] for r, lr in cands},
    }


# ---- task splits ------------------------------------------------------------------------------------------------
def carve_tasks(config: ReproduceConfig, out: Path) -> tuple[dict[str, dict[str, str]], dict[str, str]]:
    """Seeded, disjoint train / validation / test files for every task whose data was given, in its own format.

    Test and validation are drawn first (at most 20% and 15% of the file), so they never change when `max_train`
    does; the training examples are the next `max_train`. Returns ({task: {split: file}}, {task: why skipped}).
    """
    found, skipped = {}, {}
    for task in config.tasks:
        src = _task_file(config, task)
        if src is None:
            skipped[task] = (
                "no --story-cloze file given"
                if task == "rocstories"
                else f"no {GLUE_TASKS[task]}/train.tsv under --glue"
                if config.glue
                else "no --glue folder given"
            )
            continue
        lines = src.read_text(encoding="utf-8").splitlines(keepends=True)
        header = [] if task == "cola" else lines[:1]  # GLUE's CoLA file has no header row
        rows = [line for line in lines[len(header) :] if line.strip()]
        order = np.random.default_rng([config.seed, TASK_ORDER.index(task)]).permutation(len(rows))
        n_test = min(config.test_examples, len(rows) // 5)
        n_val = min(config.val_examples, len(rows) * 3 // 20)
        parts = {
            "test": order[:n_test],
            "validation": order[n_test : n_test + n_val],
            "train": order[n_test + n_val : n_test + n_val + config.max_train],
        }
        if min(len(v) for v in parts.values()) < 2:
            skipped[task] = f"{src} has too few rows ({len(rows)}) to carve train, validation and test splits"
            continue
        folder = out / task
        folder.mkdir(parents=True, exist_ok=True)
        files = {}
        for split, idx in parts.items():
            path = folder / f"{split}{src.suffix}"
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text("".join(header + [rows[i] for i in np.sort(idx)]), encoding="utf-8")
            os.replace(tmp, path)
            files[split] = str(path)
        files["sizes"] = {split: int(len(idx)) for split, idx in parts.items()}
        found[task] = files
    return found, skipped


def _task_file(config: ReproduceConfig, task: str) -> Path | None:
    if task == "rocstories":
        p = Path(config.story_cloze).expanduser() if config.story_cloze else None
    else:
        p = Path(config.glue).expanduser() / GLUE_TASKS[task] / "train.tsv" if config.glue else None
    return p if p is not None and p.is_file() else None


# ---- stages ---------------------------------------------------------------------------------------------------------
def _pretrain(config: ReproduceConfig, out: Path, progress: bool) -> dict:
    if config.model is not None:
        return {
            "snapshots": [[1, str(config.model)]],
            "summary": f"none (given model {config.model})",
            "given_model": str(config.model),
        }
    from gpt1.data.corpus import prepare_corpus
    from gpt1.recipes.pretrain import pretrain

    corpus = out / "corpus"
    if config.tokenizer:
        meta = prepare_corpus(config.books, corpus, config.tokenizer, progress=progress, num_proc=os.cpu_count() or 1)
    else:
        meta = prepare_corpus(
            config.books, corpus, None, vocab_size=config.vocab_size, progress=progress, num_proc=os.cpu_count() or 1
        )
    run = out / "pretrain"
    n_pos = config.model_overrides.get("n_positions") or _preset_positions(config.preset)
    steps = max(config.snapshots, -(-config.pretrain_tokens // config.batch_tokens))
    every = -(-steps // config.snapshots)  # the last snapshot is the final step's
    resume = "auto" if (run / "checkpoints").is_dir() else None
    result = pretrain(
        data=str(corpus),
        preset=config.preset,
        out=str(run),
        max_steps=steps,
        batch_tokens=config.batch_tokens,
        lr=config.pretrain_lr,
        warmup=config.pretrain_warmup,
        eval_every=every,
        save_every=every,
        snapshots=True,
        model_overrides=dict(config.model_overrides),
        precision=config.precision,
        device=config.device,
        logger=config.logger,
        seed=config.seed,
        progress=progress,
        resume=resume,
        log_every=max(1, min(50, steps // 50)),
    )
    if result["interrupted"]:
        raise KeyboardInterrupt
    snaps = sorted((int(p.name.split("_")[1]), str(p)) for p in (run / "snapshots").glob("step_*"))
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    vals = [{"step": r["step"], "tokens": r["tokens"], "val_loss": r["val_loss"]} for r in rows if "val_loss" in r]
    resolved = json.loads((run / "run_config.json").read_text())[RESOLVED]
    speeds = sorted(r["tokens_per_s"] for r in rows if r.get("tokens_per_s") and "val_loss" not in r)
    summary = (
        f"{result['tokens']:,} tokens in {result['step']} updates, val loss {vals[-1]['val_loss']:.3f} "
        f"(unigram entropy of the training split {meta['unigram_entropy']:.3f})"
    )
    return {
        "snapshots": [list(s) for s in snaps],
        "val_curve": vals,
        "unigram_entropy": meta["unigram_entropy"],
        "train_tokens_in_corpus": meta["train_tokens"],
        "vocab_size": meta["vocab_size"],
        "summary": summary,
        "tokens": result["tokens"],
        "steps": result["step"],
        "lr": resolved["train"]["lr"],
        "warmup": resolved["warmup_steps"],
        "median_tokens_per_s": speeds[len(speeds) // 2] if speeds else None,
        "n_positions": n_pos,
        "warnings": result.get("warnings", []),
    }


def _preset_positions(preset: str) -> int:
    from gpt1.config import PRESETS

    return PRESETS[preset]["n_positions"]


def _scratch_model(pretrained: str, out: Path, seed: int) -> str:
    """The pre-trained network's exact shape and tokenizer with fresh N(0, 0.02) weights (the no-pre-training row)."""
    import torch

    from gpt1.config import GPT1Config
    from gpt1.model.gpt import GPT
    from gpt1.tokenizer.bpe import Tokenizer

    config = GPT1Config.load(Path(pretrained) / "config.json")
    torch.manual_seed(seed + 1)
    GPT(config).save_pretrained(out, tokenizer=Tokenizer.from_pretrained(pretrained))
    return str(out)


def _transfer_layers(pretrained: str, k: int, out: Path, seed: int) -> str:
    """The pre-trained model with embeddings and its first `k` blocks kept and every later block re-initialised."""
    import torch

    from gpt1.model.gpt import GPT
    from gpt1.tokenizer.bpe import Tokenizer

    model = GPT.from_pretrained(pretrained)
    torch.manual_seed(seed + 100 + k)
    for block in model.h[k:]:
        block.apply(model._init_weights)
    model.save_pretrained(out, tokenizer=Tokenizer.from_pretrained(pretrained))
    return str(out)


def _finetune(
    config: ReproduceConfig, files: dict, task: str, init: str, lr: float, lm_coef: float, run: Path, progress: bool
) -> dict:
    from gpt1.evaluation.evaluate import evaluate
    from gpt1.recipes.finetune import finetune

    shutil.rmtree(run, ignore_errors=True)  # a run cut short starts again
    result = finetune(
        task,
        files["train"],
        run,
        model=init,
        val_data=files["validation"],
        epochs=config.epochs,
        max_steps=config.max_steps,
        batch_size=config.batch_size,
        lr=lr,
        lm_coef=lm_coef,
        seed=config.seed,
        precision=config.precision,
        device=config.device,
        logger=config.logger,
        progress=progress,
    )
    if result["interrupted"]:
        raise KeyboardInterrupt
    metric = result["main_metric"]
    test = evaluate(str(run / "best"), task, files["test"], split="test", progress=False, device=None)
    _drop_weights(run)
    best_row = (
        json.loads((run / "best" / "metrics.json").read_text()) if (run / "best" / "metrics.json").exists() else {}
    )
    return {
        "val": float(result["best"]),
        "test": float(test[metric]),
        "metric": metric,
        "lr": lr,
        "lm_coef": lm_coef,
        "init": init,
        "steps": result["step"],
        "best_step": best_row.get("step"),
        "test_metrics": {k: v for k, v in test.items() if isinstance(v, float)},
    }


def _drop_weights(run: Path) -> None:
    """Fine-tuned weights are not needed once scored (dozens of runs); metrics.jsonl and loss.png stay."""
    shutil.rmtree(run / "checkpoints", ignore_errors=True)
    for d in (run, run / "best"):
        (d / "model.safetensors").unlink(missing_ok=True)


def _zero_shot(model_dir: str, tasks: dict, names: list[str], config: ReproduceConfig) -> dict:
    from gpt1.evaluation.zero_shot import read_zero_shot, zero_shot
    from gpt1.model.gpt import GPT
    from gpt1.tokenizer.bpe import Tokenizer

    model = GPT.from_pretrained(model_dir).eval()
    tok = Tokenizer.from_pretrained(model_dir)
    scores = {}
    for name in names:
        examples = read_zero_shot(name, tasks[name]["test"], "test")
        calib = read_zero_shot(name, tasks[name]["train"], "train") if name == "cola" else None
        res = zero_shot(model, tok, name, examples, calibration=calib, precision=config.precision)
        scores[name] = float(res[ZERO_SHOT_METRIC[name]])
    return scores


# ---- the report ------------------------------------------------------------------------------------------------------
ARM_NAMES = {
    "full": "Transformer w/ aux LM (full)",
    "scratch": "Transformer w/o pre-training",
    "no_aux_lm": "Transformer w/o aux LM",
}


def build_report(config, pre, table5, runs, layers, zero_shot, tasks, skipped, state, seconds) -> dict:
    units = state.data["units"]
    timing = {
        "pretrain": pre.get("seconds", 0.0),
        "finetune_table5": sum(u.get("seconds", 0) for k, u in units.items() if k.startswith("ft/")),
        "layers": sum(u.get("seconds", 0) for k, u in units.items() if k.startswith(("layers/", "init/k"))),
        "zero_shot": sum(u.get("seconds", 0) for k, u in units.items() if k.startswith("zero_shot/")),
    }
    normalized = {}
    for step, scores in zero_shot.items():
        normalized[step] = {}
        for t, v in scores.items():
            if t == "seconds":
                continue
            best = max(arm["test"] for arm in table5[t].values())  # the best fine-tuned test score of the task
            span = best - CHANCE[t]
            normalized[step][t] = (v - CHANCE[t]) / span if span > 0 else None
    return {
        "config": config.to_dict(),
        "pretraining": pre,
        "table5": table5,
        "runs": runs,
        "layers": layers,
        "zero_shot": zero_shot,
        "zero_shot_normalized": normalized,
        "tasks": {t: f["sizes"] for t, f in tasks.items()},
        "skipped": skipped,
        "seconds": timing,
        "wall_seconds_this_call": round(seconds, 1),
    }


def write_report(report: dict, out: Path) -> None:
    figures = _figures(report, out)
    tmp = out / "report.json.tmp"
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    os.replace(tmp, out / "report.json")
    (out / "report.md.tmp").write_text(_markdown(report, figures))
    os.replace(out / "report.md.tmp", out / "report.md")


def _markdown(r: dict, figures: list[str]) -> str:
    c, pre, t5 = r["config"], r["pretraining"], r["table5"]
    tasks = list(t5)
    lines = ["# gpt1 reproduce: what pre-training buys", ""]
    if pre.get("given_model"):
        lines.append(f"Pre-trained model: `{pre['given_model']}` (given; no pre-training run).")
    else:
        arch = {"preset": c["preset"], **c["model_overrides"]}
        lines += [
            f"Pre-training: `{arch}` on `{c['books']}`, {pre['summary']}; peak lr {pre['lr']:g}, warmup "
            f"{pre['warmup']} steps, batch {c['batch_tokens']} tokens, median {pre['median_tokens_per_s'] or 0:,.0f} "
            "tokens/s."
        ]
        for w in pre.get("warnings", []):
            lines.append(f"- {w}")
    lines += [
        "",
        f"Fine-tuning: the paper's recipe (batch {c['batch_size']}, {c['epochs']:g} epochs, warmup 0.2% then linear "
        f"decay, λ = {c['lm_coef']:g}); each row picks its lr from {{{', '.join(f'{x:g}' for x in c['finetune_lrs'])}}} "
        "by validation score; test = seeded split of each task's training file, never seen in training or selection.",
        "",
    ]
    lines += [
        "## Table 5 (test split)",
        "",
        "| method | " + " | ".join(f"{t} ({t5[t]['full']['metric']})" for t in tasks) + " | avg |",
        "|---|" + "---:|" * (len(tasks) + 1),
    ]
    for arm in ("full", "scratch", "no_aux_lm"):
        vals = [t5[t][arm]["test"] for t in tasks]
        cells = [f"{100 * v:.1f} (lr {t5[t][arm]['lr']:g})" for t, v in zip(tasks, vals)]
        lines.append(f"| {ARM_NAMES[arm]} | " + " | ".join(cells) + f" | {100 * float(np.mean(vals)):.1f} |")
    lines += [
        "",
        "Pre-trained minus from-scratch: "
        + ", ".join(f"{t} {100 * (t5[t]['full']['test'] - t5[t]['scratch']['test']):+.1f}" for t in tasks)
        + " points.",
        "",
    ]
    sizes = r["tasks"]
    lines += [
        "Examples per split: "
        + "; ".join(f"{t} {s['train']}/{s['validation']}/{s['test']}" for t, s in sizes.items())
        + " (train/validation/test).",
        "",
    ]
    if r["skipped"]:
        lines += ["Skipped: " + "; ".join(f"{t} ({why})" for t, why in r["skipped"].items()) + ".", ""]
    if r["layers"]:
        L = r["layers"]
        lines += [
            f"## Figure 2 left: layers transferred ({L['task']}, lr {L['lr']:g})",
            "",
            "| layers transferred | val | test |",
            "|---:|---:|---:|",
        ]
        lines += [f"| {p['layers']} | {100 * p['val']:.1f} | {100 * p['test']:.1f} |" for p in L["points"]]
        lines += [f"| none (no pre-training) | | {100 * L['scratch_test']:.1f} |", ""]
    if r["zero_shot"]:
        names = [t for t in next(iter(r["zero_shot"].values())) if t != "seconds"]
        lines += [
            "## Figure 2 right: zero-shot heuristics against pre-training updates",
            "",
            "Raw score (normalised: 0 = chance, 1 = the task's best fine-tuned test score).",
            "",
            "| updates | " + " | ".join(names) + " |",
            "|---:|" + "---:|" * len(names),
        ]
        for step, scores in r["zero_shot"].items():
            norm = r["zero_shot_normalized"][step]
            cells = [f"{scores[t]:.3f} ({norm[t]:.2f})" if norm[t] is not None else f"{scores[t]:.3f}" for t in names]
            lines.append(f"| {step} | " + " | ".join(cells) + " |")
        lines.append("")
    s = r["seconds"]
    lines += ["## Time", "", "| part | seconds |", "|---|---:|"] + [f"| {k} | {v:,.0f} |" for k, v in s.items()]
    lines += ["", *[f"![{f}]({f})" for f in figures], ""]
    return "\n".join(lines)


def _figures(r: dict, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names: list[str] = []

    def save(fig, ax, name: str, title: str, xlabel: str, ylabel: str) -> None:
        ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        names.append(name)

    t5 = r["table5"]
    tasks = list(t5)
    fig, ax = plt.subplots(figsize=(1.6 * len(tasks) + 3, 3.6))
    for i, arm in enumerate(("full", "scratch", "no_aux_lm")):
        ax.bar(
            np.arange(len(tasks)) + (i - 1) * 0.27,
            [100 * t5[t][arm]["test"] for t in tasks],
            0.27,
            label=ARM_NAMES[arm],
        )
    ax.set_xticks(np.arange(len(tasks)), [f"{t}\n({t5[t]['full']['metric']})" for t in tasks])
    save(fig, ax, "table5.png", "Table 5: ablations", "", "test score x 100")
    if r["layers"]:
        L = r["layers"]
        fig, ax = plt.subplots(figsize=(5, 3.6))
        ks = [p["layers"] for p in L["points"]]
        ax.plot(ks, [100 * p["test"] for p in L["points"]], "o-", label="test")
        ax.plot(ks, [100 * p["val"] for p in L["points"]], "s--", label="validation")
        ax.axhline(100 * L["scratch_test"], color="grey", ls=":", label="no pre-training (test)")
        save(
            fig, ax, "layers.png", "Figure 2 (left)", "# of pre-trained layers transferred", f"{L['task']} score x 100"
        )
    if r["zero_shot"]:
        steps = [int(s) for s in r["zero_shot"]]
        fig, ax = plt.subplots(figsize=(5, 3.6))
        for t in next(iter(r["zero_shot_normalized"].values())):
            ys = [r["zero_shot_normalized"][str(s)][t] for s in steps]
            ax.plot(steps, [np.nan if y is None else y for y in ys], "o-", label=t)
        ax.axhline(0, color="grey", lw=0.8)
        save(fig, ax, "zero_shot.png", "Figure 2 (right)", "pre-training updates", "zero-shot score (normalised)")
    curve = r["pretraining"].get("val_curve")
    if curve:
        fig, ax = plt.subplots(figsize=(5, 3.6))
        ax.plot([v["tokens"] / 1e6 for v in curve], [v["val_loss"] for v in curve], "o-", label="validation loss")
        ax.axhline(r["pretraining"]["unigram_entropy"], color="grey", ls=":", label="unigram entropy (train split)")
        save(fig, ax, "pretraining.png", "Pre-training", "pre-training tokens (millions)", "nats per token")
    return names
