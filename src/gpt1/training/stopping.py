"""Stopping a training run from outside, and the checks that keep a stopped or resumed run sound.

- `StopSignals`: SIGTERM (how Slurm, Kubernetes and spot instances stop jobs) takes Ctrl-C's path. In one process it
  raises `KeyboardInterrupt` where the process is, exactly as Ctrl-C does, so the Trainer rolls back the half-done
  step, saves a checkpoint and reports how to resume. Under DDP a rank that stopped on its own would leave the
  others waiting in their next all-reduce for ever, so there SIGTERM and SIGINT only raise a flag; the Trainer sums
  it over the ranks in the all-reduce every step already does, and all ranks stop together after that step.
- `diverged`: the error for the first non-finite loss, raised before that step's update is applied.
- `check_same_data`: a resume must train on the data the run was started on.
"""

from __future__ import annotations

import json
import math
import signal
import threading
import time
from pathlib import Path
from typing import Any

ESCALATE_AFTER_S = 10.0  # under DDP, a second signal this long after the first stops at once (a rank may be stuck)


class StopSignals:
    """While installed (main thread only), SIGTERM, and under DDP also SIGINT, ask the run to stop."""

    def __init__(self, distributed: bool) -> None:
        self.distributed = distributed
        self.requested = False  # this rank got a signal (DDP): the Trainer shares it with the other ranks
        self.agreed = False  # some rank got one: every rank stops after the current step
        self.signal_name: str | None = None
        self._first_at: float | None = None
        self._previous: dict[int, Any] = {}

    def install(self) -> StopSignals:
        if threading.current_thread() is not threading.main_thread():
            return self  # Python runs signal handlers in the main thread only; a Trainer elsewhere keeps the defaults
        for sig in (signal.SIGTERM, signal.SIGINT) if self.distributed else (signal.SIGTERM,):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame) -> None:
        self.signal_name = signal.Signals(signum).name
        if not self.distributed:
            raise KeyboardInterrupt  # the Ctrl-C path: roll back the half-done step, save, exit with a resume hint
        now = time.monotonic()
        if self._first_at is not None and now - self._first_at >= ESCALATE_AFTER_S:
            raise KeyboardInterrupt  # asked twice, well apart: a rank may be stuck, so stop here and now
        # torchrun forwards a terminal's Ctrl-C as a second signal within milliseconds: that one only re-asks.
        self._first_at = self._first_at or now
        self.requested = True


class TrainingDiverged(ValueError):
    """The loss (or gradient norm) became NaN or infinite; the update of that step was not applied."""


def diverged(loss: float, step: int, lr: float, run_dir: Path) -> TrainingDiverged:
    """The error for a non-finite loss or gradient norm at `step`, naming the lr and the checkpoint still good."""
    from gpt1.training.state import find_latest_checkpoint

    latest = find_latest_checkpoint(run_dir)
    kept = f"the last good checkpoint, {latest}, is kept" if latest else "no checkpoint had been saved yet"
    what = f"the loss is {loss}" if not math.isfinite(loss) else "the gradient norm is not finite"
    return TrainingDiverged(
        f"training diverged at step {step}: {what} (lr {lr:.3g}); stopped before applying that "
        f"step, {kept}; try a lower learning rate (--lr)."
    )


def check_same_data(run_dir: Path, run_config: dict, resume: str) -> None:
    """Refuse to resume `run_dir` on other data than it was started on (it would continue on the wrong corpus)."""
    saved_file = Path(run_dir) / "run_config.json"
    if "data" not in run_config or not saved_file.is_file():
        return
    try:
        saved = json.loads(saved_file.read_text())
    except (OSError, json.JSONDecodeError):
        return
    if "data" not in saved or _same_sources(saved["data"], run_config["data"]):
        return
    raise ValueError(
        f"--resume {resume}: {run_dir} was trained on --data {_show(saved['data'])}, but this run names "
        f"--data {_show(run_config['data'])}; resume with the same --data, or start a new run in another "
        f"--out."
    )


def _as_list(data) -> list[str]:
    if data is None:
        return []
    return [str(d) for d in data] if isinstance(data, (list, tuple)) else [str(data)]


def _same_sources(a, b) -> bool:
    """The same files (equal as written, or the same file once resolved) or the same dataset names, in order."""
    a, b = _as_list(a), _as_list(b)
    return len(a) == len(b) and all(x == y or _same_file(x, y) for x, y in zip(a, b))


def _same_file(x: str, y: str) -> bool:
    """Both name one existing file (e.g. a relative and an absolute path to it)."""
    rx = _resolved(x)
    return rx is not None and rx == _resolved(y)


def _resolved(name: str) -> str | None:
    path = Path(name).expanduser()
    return str(path.resolve()) if path.exists() else None


def _show(data) -> str:
    return " ".join(_as_list(data)) or "(none)"
