"""`run`: lm-eval's own `simple_evaluate` with the gpt1 model and the GPT-1 task pack, behind `gpt1 lm-eval`."""

from __future__ import annotations

import difflib
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lm_eval import simple_evaluate
from lm_eval.tasks import TaskManager
from lm_eval.utils import handle_non_serializable

from gpt1.lm_eval import TASK_DIR
from gpt1.lm_eval.task_pack import DATA_KEYS


def task_manager(
    tasks: Sequence[str], include_path: Sequence[str | Path] = (), metadata: dict[str, Any] | None = None
) -> TaskManager:
    """lm-eval's TaskManager over the task pack and `include_path`, and over lm-eval's own tasks only when a name
    needs them (indexing those takes seconds); a ValueError naming close matches for an unknown task."""
    paths = [str(TASK_DIR), *map(str, include_path)]
    for path in paths[1:]:
        if not Path(path).exists():
            raise FileNotFoundError(f"include_path {path}: no such file or folder.")
    manager = TaskManager(include_path=paths, include_defaults=False, metadata=metadata)
    missing = set(tasks) - set(manager.all_tasks)
    if any(not t.startswith("gpt1_") for t in missing):  # lm-eval's own tasks have no gpt1_ names
        manager = TaskManager(include_path=paths, metadata=metadata)
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        near = {t: difflib.get_close_matches(t, manager.all_tasks, n=3, cutoff=0.6) for t in unknown}
        hints = "; ".join(f"{t!r}" + (f" (did you mean {', '.join(m)}?)" if m else "") for t, m in near.items())
        raise ValueError(f"Unknown task {hints}; `lm-eval ls tasks` lists lm-eval's, the GPT-1 pack has gpt1_*.")
    return manager


def parse_task_data(pairs: Sequence[str]) -> dict[str, str]:
    """`KEY=PATH` pairs (KEY one of `DATA_KEYS`, with or without the gpt1_ prefix) as {KEY: PATH}."""
    out = {}
    for pair in pairs:
        key, sep, path = pair.partition("=")
        key = key.removeprefix("gpt1_")
        if not sep or key not in DATA_KEYS or not path:
            raise ValueError(f"task_data {pair!r} is not KEY=PATH with KEY one of {', '.join(DATA_KEYS)}.")
        out[key] = path
    return out


def run(
    model: str,
    tasks: Sequence[str],
    *,
    include_path: Sequence[str | Path] = (),
    num_fewshot: int | None = None,
    limit: float | None = None,
    batch_size: int = 16,
    device: str | None = None,
    dtype: str | None = None,
    tokenizer: str | None = None,
    task_data: dict[str, str] | None = None,
    model_args: dict[str, Any] | None = None,
    bootstrap_iters: int = 100000,
    log_samples: bool = False,
) -> dict[str, Any]:
    """lm-eval's results dict for the gpt1 model `model` on `tasks` (names of the task pack, of `include_path` or
    of lm-eval); `task_data` maps task keys to local files (see `gpt1.lm_eval.task_pack`)."""
    args = {"pretrained": model, **(model_args or {})}
    args.update({k: v for k, v in (("tokenizer", tokenizer), ("dtype", dtype)) if v is not None})
    manager = task_manager(list(tasks), include_path, {**args, "gpt1_data": dict(task_data or {})})
    return simple_evaluate(
        model="gpt1",
        model_args=args,
        tasks=list(tasks),
        num_fewshot=num_fewshot,
        limit=int(limit) if limit is not None and limit >= 1 else limit,
        batch_size=batch_size,
        device=device,
        task_manager=manager,
        bootstrap_iters=bootstrap_iters,
        log_samples=log_samples,
    )


def write_results(results: dict[str, Any], path: str | Path) -> Path:
    """The results as JSON at `path` (a .json file, or a folder that gets results.json), written whole or not at all."""
    target = Path(path)
    if target.suffix != ".json":
        target = target / "results.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(results, indent=2, default=handle_non_serializable, ensure_ascii=False)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".results-", suffix=".json")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text + "\n")
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target
