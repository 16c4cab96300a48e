"""`gpt1 demo`: fine-tune a GPT-1-architecture model on the `pyjokes` jokes and print new jokes — offline, on a CPU.

Offline (the default) it cannot have GPT-1's vocabulary files, so it learns a small BPE on the jokes with the original
pre-tokenisation (`gpt1.tokenizer.learn_bpe`) and trains a small model from scratch. With `model="openai-community/openai-gpt"`
(online) it fine-tunes real GPT-1 with its real tokenizer instead.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from gpt1.config import GPT1Config
from gpt1.data.text import EOS_TOKEN
from gpt1.model.gpt import GPT
from gpt1.recipes.finetune import PAPER_LR
from gpt1.training.config import RESOLVED, Config, RunOptions, TrainConfig, check_positive, like, setting, show_number

logger = logging.getLogger(__name__)

PROMPT = "JOKE:"
# The default demo model: GPT-1's architecture (post-LN blocks, GELU, learned positions, tied LM head), scaled down
# so a 2-core CPU trains it in a few minutes. `quick` is the CI-sized run.
DEMO_SIZES = {
    "default": dict(n_layer=4, n_head=4, n_embd=128, n_positions=128, steps=300, vocab=2000, batch=16),
    "quick": dict(n_layer=2, n_head=2, n_embd=64, n_positions=64, steps=30, vocab=600, batch=16),
}


def demo_jokes() -> list[str]:
    """The English jokes shipped with the `pyjokes` package (a PyPI dependency), in a fixed order."""
    import pyjokes

    return list(pyjokes.get_jokes(language="en", category="all"))


DEMO_LR = 1e-3  # a small fresh model: the paper's fine-tuning lr would barely move it


@dataclass(kw_only=True)
class DemoConfig(Config):
    """Every setting of `gpt1 demo`, each default written here once (the sizes are `DEMO_SIZES`)."""

    label: ClassVar[str] = "demo"

    out: str = setting("runs/demo", "the run dir")
    model: str | None = setting(None, "fine-tune these weights instead (e.g. openai-community/openai-gpt; online)")
    quick: bool = setting(False, f"a CI-sized run (seconds): tiny model, {DEMO_SIZES['quick']['steps']} steps")
    steps: int | None = setting(
        None, f"optimizer steps (default {DEMO_SIZES['default']['steps']}, --quick {DEMO_SIZES['quick']['steps']})"
    )
    num_jokes: int = setting(8, "jokes generated at the end")
    lr: float | None = setting(
        None,
        f"peak learning rate (default {show_number(DEMO_LR)} from scratch, {show_number(PAPER_LR)} with --model)",
    )
    seed: int = like(TrainConfig, "seed", help="seed of the split, weights, data order and sampling")
    resume: str | None = like(RunOptions, "resume")
    progress: bool = like(RunOptions, "progress", help="progress bars and messages", cli=False)

    def __post_init__(self) -> None:
        self.out = str(self.out)
        check_positive(self, "steps")
        check_positive(self, "num_jokes", low=0)
        if self.lr is not None and not self.lr > 0:  # `lr or default` would turn --lr 0 into the default silently
            raise ValueError(
                f"lr={self.lr} is invalid; use a learning rate > 0 (default {show_number(DEMO_LR)}, or "
                f"{show_number(PAPER_LR)} with --model)."
            )


def demo(out: str | Path = DemoConfig.out, **settings: Any) -> dict[str, Any]:
    """Train on the pyjokes corpus, write the run dir `out` (with loss.png), log and return `num_jokes` new jokes.

    `settings`: the fields of `DemoConfig`. Without `resume`, an earlier demo run in `out` is replaced by a fresh
    one (said first). With `resume`, the run keeps its own tokenizer and architecture. The jokes are sampled from
    `best/` (the best validation step). After Ctrl-C / SIGTERM the result has `interrupted` set and no jokes.
    """
    return run_demo(DemoConfig.from_flat({"out": out, **settings}))


def run_demo(config: DemoConfig) -> dict[str, Any]:
    """The demo as `config` says (see `demo`)."""
    from gpt1.recipes.finetune_lm import FinetuneLMConfig, build_model_and_tokenizer, run_finetune_lm, sample

    c = config
    out = Path(c.out)
    size = DEMO_SIZES["quick" if c.quick else "default"]
    texts = demo_jokes()
    resumed_from = _run_dir_to_resume(out, c.resume)
    if c.resume is None:
        _clear_earlier_demo(out, c.progress)
    if c.model is None:
        if resumed_from is not None:  # the run's own tokenizer: a new BPE would give the saved weights other ids
            from gpt1.tokenizer.bpe import Tokenizer

            tok = Tokenizer.from_pretrained(resumed_from)
            net = GPT(GPT1Config.load(resumed_from / "config.json"))  # its architecture; the weights come next
        else:
            from gpt1.tokenizer.learn_bpe import train_tokenizer

            tok = train_tokenizer(texts, size["vocab"], special_tokens=[EOS_TOKEN])
            model_config = GPT1Config(
                vocab_size=len(tok),
                n_layer=size["n_layer"],
                n_head=size["n_head"],
                n_embd=size["n_embd"],
                n_positions=size["n_positions"],
            )
            net = GPT(model_config)
        lr = DEMO_LR if c.lr is None else c.lr
    else:
        net, tok = build_model_and_tokenizer(c.model, None, None)
        if resumed_from is not None:
            from gpt1.tokenizer.bpe import Tokenizer

            tok = Tokenizer.from_pretrained(resumed_from)
        lr = PAPER_LR if c.lr is None else c.lr
    if c.progress:
        what = (
            f"fine-tuning {c.model}"
            if c.model
            else f"training a {net.config.num_parameters() / 1e6:.1f}M-parameter GPT-1-architecture model from scratch"
        )
        logger.info(f"gpt1 demo: {what} on {len(texts)} jokes from pyjokes -> {out}")
    n_steps = c.steps or size["steps"]
    lm_config = FinetuneLMConfig(
        data="pyjokes",
        out=c.out,
        model=c.model,
        max_steps=n_steps,
        batch_size=size["batch"],
        lr=lr,
        warmup_fraction=0.05,
        val_fraction=0.1,
        eval_every=max(1, n_steps // 4),
        log_every=max(1, min(10, n_steps // 10)),
        sample_prompt=PROMPT,
        num_samples=2 if c.progress else 0,
        sample_tokens=30,
        seed=c.seed,
        progress=c.progress,
        resume=c.resume,
    )
    result = run_finetune_lm(lm_config, texts=texts, prepared=(net, tok), saved_as=("demo", c.to_dict()))
    if result["interrupted"]:
        return {**result, "jokes": []}
    best_net, best_step = _best_weights(out)
    jokes = (
        sample(
            best_net or net,
            tok,
            PROMPT,
            c.num_jokes,
            result["eos_token_id"],
            max_new_tokens=40,
            temperature=0.8,
            top_k=40,
            seed=c.seed,
        )
        if c.num_jokes
        else []
    )
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    train_losses = [r["loss"] for r in rows if "val_loss" not in r and r.get("loss") is not None]
    val_losses = [r["val_loss"] for r in rows if r.get("val_loss") is not None]
    result.update(
        jokes=jokes,
        first_loss=train_losses[0] if train_losses else None,
        last_loss=train_losses[-1] if train_losses else None,
        val_losses=val_losses,
        jokes_step=best_step if best_net is not None else result["step"],
    )
    if c.progress:
        if train_losses:
            logger.info(
                f"\ntraining loss fell from {train_losses[0]:.3f} to {train_losses[-1]:.3f}; "
                f"validation loss by eval: {' -> '.join(f'{v:.3f}' for v in val_losses)}"
            )
        logger.info(f"run dir: {out} (loss curve: {out / 'loss.png'}, samples: {out / 'samples.jsonl'})")
        weights = out / "best" if best_net is not None else out
        source = (
            f"the best validation step, {best_step} of {result['step']} ({weights})"
            if best_net is not None
            else f"the last step, {result['step']} ({weights})"
        )
        logger.info(f"\n{len(jokes)} new jokes, from the weights of {source}:")
        for j in jokes:
            logger.info(f"  {PROMPT} {j}")
        logger.info(f'\nmore: gpt1 generate --model {weights} --prompt "{PROMPT}" --top-k 40')
    return result


def _run_dir_to_resume(out: Path, resume: str | None) -> Path | None:
    """The run dir whose tokenizer and architecture a resume must reuse (None for a fresh run)."""
    from gpt1.training.state import find_latest_checkpoint

    if resume is None:
        return None
    if resume == "auto":
        return out if find_latest_checkpoint(out) is not None and (out / "config.json").is_file() else None
    path = Path(resume)
    run = path if (path / "checkpoints").is_dir() else path.parent.parent  # a run dir, or run/checkpoints/step_N
    return run if (run / "config.json").is_file() else None


def _is_demo_run(out: Path) -> bool:
    try:
        saved = json.loads((out / "run_config.json").read_text())
    except (OSError, ValueError):
        return False
    recipe = (saved.get(RESOLVED) or {}).get("recipe") if isinstance(saved, dict) else None
    return recipe == "demo" or saved.get("data") == "pyjokes"  # the second: demo runs of earlier versions


def _clear_earlier_demo(out: Path, progress: bool) -> None:
    """Make room for a fresh demo run: an earlier demo's checkpoints, best weights and logs go (saying so first);
    any other run's checkpoints are refused, never deleted."""
    from gpt1.training.state import find_latest_checkpoint

    latest = find_latest_checkpoint(out)
    if latest is None:
        return
    if not _is_demo_run(out):
        raise ValueError(f"--out {out} holds checkpoints of a run that is not a demo run; choose another --out.")
    if progress:
        logger.info(
            f"gpt1 demo: replacing the earlier demo run in {out} (it had reached {latest.name}); "
            f"to continue it instead, run gpt1 demo --out {out} --resume auto"
        )
    for name in ("checkpoints", "best"):
        shutil.rmtree(out / name, ignore_errors=True)
    for name in ("metrics.jsonl", "samples.jsonl", "loss.png"):
        (out / name).unlink(missing_ok=True)


def _best_weights(out: Path) -> tuple[GPT | None, int | None]:
    """The weights in `out/best` (the best validation step) and that step, or (None, None) without them."""
    best = out / "best"
    try:
        step = int(json.loads((best / "metrics.json").read_text())["step"])
    except (OSError, ValueError, KeyError):
        return None, None
    return GPT.from_pretrained(best), step
