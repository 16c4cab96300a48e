"""One `Trainer` for pre-training and both kinds of fine-tuning: AdamW, warmup + cosine/linear decay, clipping,
token-exact gradient accumulation, bf16 autocast, optional `torch.compile`, DDP, eval, atomic checkpoints, exact resume.

The Trainer pulls micro-batches from a `BatchSource` and turns each into a loss with `loss_fn`; it knows nothing of
the CLI or of where batches come from. Run-dir layout (all written by rank 0 only):

    config.json, model.safetensors, tokenizer files   latest weights: `GPT.from_pretrained(run_dir)` works
    run_config.json                                    the recipe's settings (feed back with --config), and under
                                                       "resolved" what the run worked out (TrainConfig, steps ...)
    metrics.jsonl, loss.png                            one JSON row per log/eval step; train and val curves
    logs/                                              experiment trackers' runs (`config.logger`; trackers.py)
    best/                                              weights with the best `best_metric` so far
    checkpoints/step_0000500/                          weights + trainer_state.pt (optimizer, scheduler, torch RNG)
                                                       + trainer_state.json (step, data position, numpy/python RNG)
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
import torch.nn as nn

from gpt1.kernels.cpu.allocator import keep_freed_memory
from gpt1.model.gpt import GPT
from gpt1.runtime import dist_env, resolve_precision
from gpt1.training.config import RESOLVED, TrainConfig
from gpt1.training.optim import adamw, lr_multiplier, schedule, warmup_steps
from gpt1.training.plateau import PlateauGuard
from gpt1.training.runlog import MetricsLog, plot_losses
from gpt1.training.state import (
    find_latest_checkpoint,
    read_checkpoint,
    resolve_resume,
    rng_state,
    save_best,
    seed_everything,
    set_rng_state,
    write_checkpoint,
    write_json,
)
from gpt1.training.stopping import StopSignals, check_same_data, diverged
from gpt1.training.trackers import Trackers, open_trackers

__all__ = ["BatchSource", "LossFn", "TrainConfig", "Trainer", "find_latest_checkpoint", "lm_loss_fn"]
logger = logging.getLogger(__name__)


@runtime_checkable
class BatchSource(Protocol):
    """Where the Trainer pulls micro-batches from; `state_dict` must pin the position so a resume continues exactly."""

    steps_per_epoch: int | None  # micro-batches per epoch for this process (None: infinite sampler)

    def next_batch(self) -> dict[str, torch.Tensor]: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


LossFn = Callable[[nn.Module, dict], "tuple[torch.Tensor, int]"]


def lm_loss_fn(model: nn.Module, batch: dict) -> tuple[torch.Tensor, int]:
    """Default loss: mean next-token cross-entropy on `labels` (or `input_ids`), and the number of predicted tokens."""
    labels = batch.get("labels", batch["input_ids"])
    out = model(batch["input_ids"], attention_mask=batch.get("attention_mask"), labels=labels, return_logits=False)
    return out.loss, int((labels[:, 1:] != -100).sum())


# ---- the Trainer --------------------------------------------------------------------------------------------
class Trainer:
    """Trains `model` on micro-batches from `train_source`, writing everything about the run under `out_dir`."""

    def __init__(
        self,
        model: GPT,
        config: TrainConfig,
        train_source: BatchSource,
        out_dir: str | Path,
        *,
        loss_fn: LossFn | None = None,
        evaluate_fn: Callable[[GPT], dict[str, float]] | None = None,
        on_eval: Callable[[Trainer, dict], None] | None = None,
        tokenizer=None,
        run_config: dict | None = None,
        resolved: dict | None = None,
        plateau_guard: PlateauGuard | None = None,
    ) -> None:
        """`run_config`: the recipe's settings, saved as run_config.json; `resolved`: what the recipe worked out from
        them (saved there under "resolved", with this Trainer's own: the TrainConfig, world size, steps, warmup)."""
        self.model = model
        self.plateau_guard = plateau_guard  # warns once if the LM loss sits at its data's unigram entropy
        self.warnings: list[str] = []
        self.config = config
        self.source = train_source
        self.out_dir = Path(out_dir)
        self.loss_fn = loss_fn or lm_loss_fn
        self.evaluate_fn = evaluate_fn
        self.on_eval = on_eval
        self.tokenizer = tokenizer
        self.run_config = dict(run_config or {})
        self.resolved = dict(resolved or {})
        self.rank, self.world_size, self.local_rank = dist_env()
        self.is_main = self.rank == 0
        self.step = 0  # optimizer updates done
        self.tokens_seen = 0  # input tokens consumed, all processes together
        self.best: float | None = None
        self.last_metrics: dict[str, float] = {}
        self.total_steps = self._total_steps()
        self.warmup = warmup_steps(self.total_steps, config.warmup_steps, config.warmup_fraction)
        self.device = self._pick_device()
        self.autocast_dtype = resolve_precision(config.precision, self.device)
        self.metrics = MetricsLog(self.out_dir / "metrics.jsonl")
        self.trackers = Trackers([])  # fit() opens the ones config.logger names, on rank 0
        self._owns_process_group = False
        self._setup_done = False
        self._stop = StopSignals(distributed=False)  # fit() installs the real handlers for its duration

    # ---- setup ---------------------------------------------------------------------------------------------
    def _total_steps(self) -> int:
        c = self.config
        if (c.max_steps is None) == (c.epochs is None):
            raise ValueError("Give exactly one of max_steps and epochs (both or neither were set).")
        if c.max_steps is not None:
            return int(c.max_steps)
        spe = getattr(self.source, "steps_per_epoch", None)
        if not spe:
            raise ValueError("epochs needs a data source with a known length (steps_per_epoch); use max_steps instead.")
        return max(1, math.ceil(c.epochs * spe / c.grad_accum))

    def _pick_device(self) -> torch.device:
        if self.config.device != "auto":
            return torch.device(self.config.device)
        if torch.cuda.is_available():
            return torch.device("cuda", self.local_rank % torch.cuda.device_count())
        return torch.device("cpu")

    def _setup(self) -> None:
        import torch.distributed as dist

        if self.world_size > 1 and not dist.is_initialized():
            backend = "nccl" if self.device.type == "cuda" else "gloo"
            if self.device.type == "cuda":
                torch.cuda.set_device(self.device)
            dist.init_process_group(backend=backend)
            self._owns_process_group = True
        if self.device.type == "cpu" and self.config.keep_freed_memory:
            keep_freed_memory()  # each step's big tensors reuse the last step's pages (see allocator.py)
        self.model.to(self.device)
        c = self.config
        self.optimizer = adamw(self.model, c.lr, c.betas, c.eps, c.weight_decay, self.device)
        self.scheduler = schedule(self.optimizer, self.total_steps, self.warmup, c.schedule)
        self.ddp = None
        train_model: nn.Module = self.model
        if self.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            self.ddp = DDP(self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
            train_model = self.ddp
        if self.config.compile:
            train_model = torch.compile(train_model)
        self.train_model = train_model
        self._setup_done = True

    def autocast(self):
        """The autocast context of this run's precision (a no-op for fp32)."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    # ---- the loop ----------------------------------------------------------------------------------------------
    def fit(self, resume: str | None = None) -> dict:
        """Train to `max_steps`/`epochs`; `resume` = None (fresh), "auto" (latest checkpoint if any) or a path."""
        if not self._setup_done:
            self._setup()
        ckpt = self._resolve_resume(resume)
        if ckpt is not None:
            check_same_data(self.out_dir, self.run_config, resume)
            self._load_checkpoint(ckpt)
        else:
            if self.is_main and find_latest_checkpoint(self.out_dir) is not None:
                raise ValueError(
                    f"{self.out_dir} already holds checkpoints of a run; resume it (--resume auto) "
                    "or choose another output dir."
                )
            if resume == "auto" and self.is_main:  # say so: a typo in --out would otherwise restart silently
                logger.info(f"note: --resume auto found no checkpoint in {self.out_dir}; starting a fresh run.")
            seed_everything(self.config.seed + self.rank)
        if self.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            run_config = self._write_run_config()
            if ckpt is None:
                self.metrics.path.unlink(missing_ok=True)
            else:
                self.metrics.truncate_after(self.step)
            self.trackers = open_trackers(self.config.logger, self.out_dir, resume=ckpt is not None)
            self.trackers.log_config(run_config)
        status = "failed"
        try:
            interrupted = self._loop()
            if self.is_main and self.evaluate_fn is None:
                self._plot()
            self._log_artifacts()
            status = "interrupted" if interrupted else "finished"
        finally:
            self.trackers.close(status)
        return {
            **self.last_metrics,
            "step": self.step,
            "tokens": self.tokens_seen,
            "best": self.best,
            "interrupted": interrupted,
            "run_dir": str(self.out_dir),
            "warnings": list(self.warnings),
        }

    def _loop(self) -> bool:
        """The training loop from the current step to the last; True when it was interrupted (checkpoint saved)."""
        c = self.config
        bar = self._progress_bar()
        interval_losses: list[torch.Tensor] = []  # kept on the device: one sync per log, not per step
        interval_tokens, interval_time = 0, 0.0
        interrupted = False
        snapshot = self._snapshot()
        self._stop = StopSignals(distributed=self.world_size > 1).install()  # SIGTERM: the Ctrl-C path below
        try:
            while self.step < self.total_steps:
                snapshot = self._snapshot()
                t0 = time.perf_counter()
                loss, tokens = self._train_step()
                interval_time += time.perf_counter() - t0
                self.step += 1
                self.tokens_seen += tokens
                interval_losses.append(loss)
                interval_tokens += tokens
                last = self.step == self.total_steps
                if self.step % c.log_every == 0 or last:
                    mean_loss = torch.stack(interval_losses).double().mean().item()
                    row = self._log_row(mean_loss, interval_tokens / max(interval_time, 1e-9))
                    self.last_metrics.update(row)
                    if self.is_main:
                        self._record(row)
                    if bar is not None:
                        bar.set_postfix(
                            loss=f"{row['loss']:.4f}", lr=f"{row['lr']:.2e}", tok_s=f"{row['tokens_per_s']:.0f}"
                        )
                    self._check_plateau(row["loss"])
                    interval_losses.clear()
                    interval_tokens, interval_time = 0, 0.0
                if bar is not None:
                    bar.update(1)
                if self.evaluate_fn is not None and (self.step % c.eval_every == 0 or last):
                    self._run_eval()
                if self.step % c.save_every == 0 or last:
                    self.save_checkpoint()
                if self._stop.agreed and not last:  # a rank was signalled (DDP): all stop here, after this step
                    snapshot = self._snapshot()
                    raise KeyboardInterrupt
        except KeyboardInterrupt:
            # Roll back a half-done step (data position, RNG), so the checkpoint is exactly "after step k".
            interrupted = True
            self.optimizer.zero_grad(set_to_none=True)
            self._restore_snapshot(snapshot)
            if self.is_main:
                why = f" by {self._stop.signal_name}" if self._stop.signal_name else ""
                logger.info(f"\ninterrupted{why}: saving a checkpoint at step {self.step} in {self.out_dir} ...")
            self.save_checkpoint(gather_rng=self._stop.agreed)  # an agreed stop has every rank here to gather
        finally:
            self._stop.restore()
            if bar is not None:
                bar.close()
            if self._owns_process_group:
                import torch.distributed as dist

                dist.destroy_process_group()
                self._owns_process_group = False
        return interrupted

    def _train_step(self) -> tuple[torch.Tensor, int]:
        """One optimizer update over `grad_accum` micro-batches, averaging the loss over every token (all ranks)."""
        self.train_model.train()
        accum = self.config.grad_accum
        loss_sum = torch.zeros((), device=self.device, dtype=torch.float32)
        n_sum, tokens = 0, 0
        for i in range(accum):
            batch = {k: v.to(self.device, non_blocking=True) for k, v in self.source.next_batch().items()}
            sync = self.ddp is None or i == accum - 1
            with contextlib.nullcontext() if sync else self.ddp.no_sync():
                with self.autocast():
                    loss, n = self.loss_fn(self.train_model, batch)
                n = int(n)
                # Scale by the token count now and divide by the global count after: a token-exact mean.
                if n:
                    (loss.float() * n).backward()
                    loss_sum += loss.detach().float() * n
                elif self.ddp is not None and sync:
                    _zero_loss(self.model).backward()  # the all-reduce hooks must still fire
            n_sum += n
            tokens += int(batch["input_ids"].numel())
        # The stop flag rides on this all-reduce, so every rank learns of a signal at the same step (see stopping.py).
        stop = float(self._stop.requested)
        counts = torch.tensor([float(n_sum), float(tokens), stop], dtype=torch.float64, device=self.device)
        if self.world_size > 1:
            import torch.distributed as dist

            dist.all_reduce(counts)
            dist.all_reduce(loss_sum)
        n_global = counts[0].item()
        self._stop.agreed = counts[2].item() > 0
        # DDP averaged the gradients over ranks; undo that and divide by the global token count instead.
        scale = self.world_size / max(n_global, 1.0)
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        if self.config.grad_clip > 0:
            # clip_grad_norm_ of the scaled gradients, with the scaling and the clipping in one pass over them
            norm = torch.nn.utils.get_total_norm(grads, foreach=True) * scale
            scale = torch.clamp(self.config.grad_clip / (norm + 1e-6), max=1.0) * scale
        # A NaN/inf loss (or gradient norm) stops the run before its update reaches the weights: one sync per step.
        finite = torch.isfinite(loss_sum)
        if self.config.grad_clip > 0:
            finite &= torch.isfinite(norm)
        if not bool(finite):
            raise diverged(
                float(loss_sum / max(n_global, 1.0)), self.step + 1, self.optimizer.param_groups[0]["lr"], self.out_dir
            )
        torch._foreach_mul_(grads, scale)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        return loss_sum / max(n_global, 1.0), int(counts[1].item())

    def _check_plateau(self, loss: float) -> None:
        if self.plateau_guard is None:
            return
        message = self.plateau_guard.check(loss, self.tokens_seen, self.step, self.warmup, self.config.lr)
        if message is not None:
            self.warnings.append(message)
            if self.is_main:
                logger.warning(message)

    def _log_row(self, loss: float, tokens_per_s: float) -> dict[str, Any]:
        return {
            "step": self.step,
            "loss": loss,
            "lr": self._lr_of_last_update(),
            "tokens_per_s": tokens_per_s,
            "tokens": self.tokens_seen,
        }

    def _lr_of_last_update(self) -> float:
        return self.config.lr * lr_multiplier(self.step - 1, self.total_steps, self.warmup, self.config.schedule)

    def _progress_bar(self):
        if not (self.is_main and self.config.progress):
            return None
        from tqdm.auto import tqdm

        return tqdm(total=self.total_steps, initial=self.step, desc="train", unit="step", dynamic_ncols=True)

    # ---- evaluation ------------------------------------------------------------------------------------------
    def _run_eval(self) -> dict[str, float]:
        """Evaluate on rank 0 (eval mode, no grad, this run's autocast), share the metrics, keep the best weights."""
        metrics: dict[str, float] = {}
        if self.is_main:
            was_training = self.model.training
            self.model.eval()
            try:
                with torch.no_grad(), self.autocast():
                    metrics = {k: float(v) for k, v in self.evaluate_fn(self.model).items()}
            finally:
                self.model.train(was_training)
        if self.world_size > 1:
            import torch.distributed as dist

            box = [metrics]
            dist.broadcast_object_list(box, src=0)
            metrics = box[0]
        self.last_metrics.update(metrics)
        value = metrics.get(self.config.best_metric)
        improved = value is not None and math.isfinite(value) and self._better(value)
        if improved:
            self.best = value  # on every rank, so their bookkeeping stays identical
        if self.is_main:
            self._record(
                {
                    **{k: self.last_metrics.get(k) for k in ("loss", "lr", "tokens_per_s")},
                    "step": self.step,
                    "tokens": self.tokens_seen,
                    **metrics,
                }
            )
            self._plot()
            if improved:
                self._save_best(metrics)
            if self.on_eval is not None:
                self.on_eval(self, metrics)
            self._log_artifacts()
        return metrics

    def _record(self, row: dict[str, Any]) -> None:
        """A metrics row: to metrics.jsonl, and to the experiment trackers (rank 0 only)."""
        self.metrics.append(row)
        self.trackers.log_metrics(row, row["step"])

    def _log_artifacts(self) -> None:
        """The curves and the recipe's samples, as they are now, to the trackers that keep files."""
        if self.trackers:
            for name in ("loss.png", "samples.jsonl"):
                self.trackers.log_artifact(self.out_dir / name)

    def _better(self, value: float) -> bool:
        if self.best is None:
            return True
        return value < self.best if self.config.best_mode == "min" else value > self.best

    def _plot(self) -> None:
        try:
            plot_losses(self.metrics.rows(), self.out_dir / "loss.png", title=self.out_dir.name)
        except Exception as e:  # a plotting failure must never stop training
            logger.warning(f"warning: could not draw loss.png ({type(e).__name__}: {e})")

    # ---- checkpoints ---------------------------------------------------------------------------------------------
    def save_checkpoint(self, gather_rng: bool = True) -> Path | None:
        """Write `checkpoints/step_XXXXXXX` (see state.py), prune to `keep_last`, refresh the top-level weights."""
        rng = rng_state()
        rngs = [rng]
        if self.world_size > 1 and gather_rng:
            import torch.distributed as dist

            rngs = [None] * self.world_size
            dist.all_gather_object(rngs, rng)
        if not self.is_main:
            return None
        tensors = {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "torch_rng": [r["torch"] for r in rngs],
            "cuda_rng": [r["cuda"] for r in rngs],
        }
        progress = {
            "step": self.step,
            "tokens_seen": self.tokens_seen,
            "best": self.best,
            "total_steps": self.total_steps,
            "world_size": self.world_size,
            "data": self.source.state_dict(),
            "numpy_rng": [r["numpy"] for r in rngs],
            "python_rng": [r["python"] for r in rngs],
            "last_metrics": self.last_metrics,
        }
        final = write_checkpoint(
            self.out_dir / "checkpoints", self.step, self.model, tensors, progress, self.config.keep_last
        )
        self.model.save_pretrained(self.out_dir, tokenizer=self.tokenizer)
        return final

    def _save_best(self, metrics: dict[str, float]) -> None:
        save_best(self.out_dir, self.model, self.tokenizer, {"step": self.step, **metrics})

    def _resolve_resume(self, resume: str | None) -> Path | None:
        return resolve_resume(resume, self.out_dir)

    def _load_checkpoint(self, ckpt: Path) -> None:
        progress, tensors = read_checkpoint(ckpt, self.model, self.device)
        self.optimizer.load_state_dict(tensors["optimizer"])
        self.scheduler.load_state_dict(tensors["scheduler"])
        if progress["total_steps"] != self.total_steps:
            logger.info(
                f"note: the checkpoint planned {progress['total_steps']} steps, this run {self.total_steps}; "
                "the lr schedule follows this run's."
            )
        self.step = int(progress["step"])
        self.tokens_seen = int(progress["tokens_seen"])
        self.best = progress.get("best")
        self.last_metrics = dict(progress.get("last_metrics", {}))
        self.source.load_state_dict(progress["data"])
        saved_world = int(progress.get("world_size", 1))
        if saved_world == self.world_size and len(progress["numpy_rng"]) == self.world_size:
            r = self.rank
            set_rng_state(
                {
                    "torch": tensors["torch_rng"][r],
                    "cuda": tensors["cuda_rng"][r],
                    "numpy": progress["numpy_rng"][r],
                    "python": progress["python_rng"][r],
                }
            )
        else:  # a different number of processes: data position is exact, dropout masks are re-seeded
            seed_everything(self.config.seed + self.rank + 7919 * self.step)
        if self.is_main:
            logger.info(f"resumed from {ckpt} at step {self.step}")

    def _snapshot(self) -> dict:
        return {"data": self.source.state_dict(), "rng": rng_state()}

    def _restore_snapshot(self, snap: dict) -> None:
        self.source.load_state_dict(snap["data"])
        set_rng_state(snap["rng"])

    def _write_run_config(self) -> dict:
        """run_config.json (also the trackers' hyperparameters): the recipe's settings and what was resolved."""
        resolved = {
            **self.resolved,
            "train": self.config.to_dict(),
            "world_size": self.world_size,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup,
        }
        run_config = {**self.run_config, RESOLVED: resolved}
        write_json(self.out_dir / "run_config.json", run_config)
        return run_config


def _zero_loss(model: nn.Module) -> torch.Tensor:
    """A zero that depends on every parameter, for a micro-batch with nothing to predict under DDP."""
    return sum(p.reshape(-1)[0] * 0.0 for p in model.parameters())
