"""What makes a run resumable bit for bit: atomic checkpoint dirs, the best weights, every library's RNG state, and
finding the checkpoint to resume from.

A checkpoint is `checkpoints/step_0000500/`: the weights, `trainer_state.pt` (optimizer, scheduler, torch RNG per
rank) and `trainer_state.json` (step, data position, numpy/python RNG per rank), the last written last, so a dir
without it is an interrupted save and is never resumed from.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

STATE_JSON, STATE_PT = "trainer_state.json", "trainer_state.pt"


# ---- finding checkpoints ---------------------------------------------------------------------------------------
def find_latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The highest-step complete checkpoint under `run_dir/checkpoints` (temp dirs of interrupted saves ignored)."""
    ckpts = complete_checkpoints(Path(run_dir) / "checkpoints")
    return ckpts[-1] if ckpts else None


def complete_checkpoints(ckdir: Path) -> list[Path]:
    """The complete checkpoint dirs under `ckdir`, oldest first."""
    if not ckdir.is_dir():
        return []
    return sorted((p for p in ckdir.glob("step_*") if p.is_dir() and (p / STATE_JSON).exists()), key=lambda p: p.name)


def resolve_resume(resume: str | None, run_dir: Path) -> Path | None:
    """The checkpoint `resume` names: None (a fresh run), "auto" (the latest in `run_dir`, if any) or a path to a
    checkpoint dir or to a run dir (its latest)."""
    if resume is None:
        return None
    if resume == "auto":
        return find_latest_checkpoint(run_dir)
    path = Path(resume)
    if (path / STATE_JSON).exists():
        return path
    latest = find_latest_checkpoint(path) if path.is_dir() else None
    if latest is None:
        raise FileNotFoundError(
            f"{resume}: not a checkpoint dir (no trainer_state.json) nor a run dir with checkpoints."
        )
    return latest


# ---- writing and reading them ------------------------------------------------------------------------------------
def write_checkpoint(ckdir: Path, step: int, model, tensors: dict, state: dict, keep_last: int) -> Path:
    """Write `ckdir/step_XXXXXXX` atomically (temp dir + rename), then keep only the `keep_last` newest."""
    ckdir.mkdir(parents=True, exist_ok=True)
    final, tmp = ckdir / f"step_{step:07d}", ckdir / f".tmp-step_{step:07d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    model.save_pretrained(tmp)
    torch.save(tensors, tmp / STATE_PT)
    write_json(tmp / STATE_JSON, state)  # last: a dir without it is incomplete and never resumed from
    _replace_dir(tmp, final)
    for stale in complete_checkpoints(ckdir)[:-keep_last]:
        shutil.rmtree(stale, ignore_errors=True)
    for junk in ckdir.glob(".tmp-step_*"):  # left by an earlier save that was killed
        shutil.rmtree(junk, ignore_errors=True)
    return final


def read_checkpoint(ckpt: Path, model, device: torch.device) -> tuple[dict, dict]:
    """Load `ckpt`'s weights into `model` (on `device`); returns (trainer_state.json, trainer_state.pt) contents."""
    from gpt1.checkpoint import hf_to_ours, load_into, read_state_dict

    load_into(model, {k: v.to(device) for k, v in hf_to_ours(read_state_dict(ckpt)).items()}, ckpt)
    state = json.loads((ckpt / STATE_JSON).read_text())
    tensors = torch.load(ckpt / STATE_PT, map_location="cpu", weights_only=True)
    return state, tensors


def save_best(out_dir: Path, model, tokenizer, record: dict) -> None:
    """Replace `out_dir/best` with these weights and `record` (its metrics.json), atomically."""
    tmp = out_dir / ".tmp-best"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, tokenizer=tokenizer)
    write_json(tmp / "metrics.json", record)
    _replace_dir(tmp, out_dir / "best")


def _replace_dir(new: Path, target: Path) -> None:
    """Rename `new` to `target`, moving an existing `target` aside first and deleting it after."""
    old = target.with_name(".old-" + target.name)
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.rename(target, old)
    os.rename(new, target)
    shutil.rmtree(old, ignore_errors=True)


def write_json(path: Path, obj: Any) -> None:
    """`obj` as indented JSON at `path`, atomically (temp file + replace)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=float) + "\n")
    os.replace(tmp, path)


# ---- RNG ---------------------------------------------------------------------------------------------------------
def seed_everything(seed: int) -> None:
    """Seed python's, numpy's and torch's generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """Every generator's state, JSON-ready except the torch tensors."""
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": _to_lists(random.getstate()),
    }


def set_rng_state(state: dict) -> None:
    """Restore what `rng_state` returned."""
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state((n[0], np.asarray(n[1], dtype=np.uint32), n[2], n[3], n[4]))
    random.setstate(_to_tuples(state["python"]))


def _to_lists(x):
    return [_to_lists(v) for v in x] if isinstance(x, (list, tuple)) else x


def _to_tuples(x):
    return tuple(_to_tuples(v) for v in x) if isinstance(x, (list, tuple)) else x
