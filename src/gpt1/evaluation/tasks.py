"""Evaluation of a fine-tuned model on its task: head outputs for every example and the task's metrics."""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from gpt1.data.transforms import TaskData, eval_batches
from gpt1.evaluation.metrics import compute_metrics
from gpt1.model.heads import predictions, task_forward
from gpt1.model.losses import task_loss
from gpt1.runtime import autocast


@torch.no_grad()
def predict_task(model, data: TaskData, batch_size: int = 64, progress: bool = False, precision: str = "auto") -> dict:
    """Head outputs for every example of `data`, in order: `logits` (N, ...) and `predictions` (N,)."""
    was_training = model.training
    model.eval()
    spec = data.spec
    out_logits: list[np.ndarray | None] = [None] * len(data)
    bar = tqdm(total=len(data), desc=f"evaluating {spec.name}", disable=not progress, dynamic_ncols=True)
    try:
        with autocast(model.device, precision, model.dtype):
            for idx, batch in eval_batches(data, batch_size):
                out = task_forward(
                    model, spec.kind, batch["input_ids"].to(model.device), batch["extract_positions"].to(model.device)
                )
                logits = out.logits.float().cpu().numpy()
                for k, i in enumerate(idx):
                    out_logits[i] = logits[k]
                bar.update(len(idx))
    finally:
        bar.close()
        model.train(was_training)
    logits = np.stack(out_logits)
    preds = predictions(torch.from_numpy(logits), spec.regression).numpy()
    return {"logits": logits, "predictions": preds}


def evaluate_task(model, data: TaskData, batch_size: int = 64, progress: bool = False, precision: str = "auto") -> dict:
    """The task's metrics (as the paper reports them) plus `val_loss` (the task loss) on labelled `data`, and the
    per-example predictions under "predictions"."""
    spec = data.spec
    labelled = np.flatnonzero(data.targets >= 0) if not spec.regression else np.arange(len(data))
    if labelled.size == 0:
        raise ValueError(f"Task {spec.name!r}: the evaluation data has no labels to score against.")
    pred = predict_task(model, data, batch_size, progress, precision)
    y, p = data.targets[labelled], pred["predictions"][labelled]
    metrics = compute_metrics(spec.metrics, y, p)
    loss = task_loss(torch.from_numpy(pred["logits"][labelled]), torch.from_numpy(y), spec.regression)
    metrics["val_loss"] = float(loss)
    return {"metrics": metrics, "predictions": pred["predictions"].tolist(), "logits": pred["logits"].tolist()}
