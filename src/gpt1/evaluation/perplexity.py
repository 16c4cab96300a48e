"""Language-model evaluation: token-weighted validation loss over batches (the training recipes' `evaluate_fn`)
and sliding-window perplexity / bits per byte of a long text."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from gpt1.runtime import autocast


@torch.no_grad()
def evaluate_lm(model: nn.Module, batches, device=None) -> dict[str, float]:
    """Token-weighted mean LM loss and perplexity over `batches` (dicts with input_ids and optional labels)."""
    total, count = 0.0, 0
    device = device or next(model.parameters()).device
    for batch in batches:
        batch = {k: v.to(device) for k, v in batch.items()}
        labels = batch.get("labels", batch["input_ids"])
        out = model(batch["input_ids"], attention_mask=batch.get("attention_mask"), labels=labels, return_logits=False)
        n = int((labels[:, 1:] != -100).sum())  # the predicted tokens: every label after the first, less the ignored
        if n:
            total += float(out.loss) * n
            count += n
    if not count:
        raise ValueError("Evaluation saw no tokens: the validation data is empty.")
    mean = total / count
    return {"val_loss": mean, "val_ppl": math.exp(min(mean, 50.0))}


def sliding_windows(n_tokens: int, max_length: int, stride: int) -> list[tuple[int, int, int]]:
    """(begin, end, first) windows over `n_tokens` tokens: `ids[begin:end]` is fed to the model and its positions
    `first..` are scored, so every token after the first is scored exactly once (`perplexity`'s windows; the lm-eval
    adapter's rolling log-likelihood uses the same ones)."""
    windows: list[tuple[int, int, int]] = []
    if max_length < 2:
        raise ValueError(f"max_length={max_length}: a window needs 2 tokens or more to predict one.")
    new = min(stride, max_length - 1)  # keep >= 1 token of context for each scored token
    prev_end = 1  # position 0 cannot be predicted
    while prev_end < n_tokens:
        end = min(prev_end + (new if windows else max_length - 1), n_tokens)
        begin = max(0, end - max_length)
        windows.append((begin, end, prev_end - begin))
        prev_end = end
    return windows


@torch.no_grad()
def perplexity(
    model,
    tokenizer,
    text: str,
    *,
    stride: int | None = None,
    max_length: int | None = None,
    batch_size: int = 8,
    progress: bool = False,
    precision: str = "auto",
) -> dict[str, float]:
    """Perplexity (per BPE token) and bits per byte (of the UTF-8 text) with a sliding window.

    Windows of `max_length` tokens (default: the model's context) advance by `stride` tokens (default: half the
    window) and score only their last `stride` tokens, so every token after the first is predicted exactly once,
    with at least `max_length - stride` tokens of context (`stride = max_length` means non-overlapping windows that
    still share one token, so no scored token lacks context). The first token has nothing to be predicted from.
    """
    model.eval()
    max_length = model.config.n_positions if max_length is None else max_length  # 0 is refused below, not defaulted
    stride = max(1, max_length // 2) if stride is None else stride
    if not 2 <= max_length <= model.config.n_positions:  # a 1-token window predicts nothing
        raise ValueError(f"max_length={max_length} must be in 2..{model.config.n_positions} (the model's context).")
    if not 1 <= stride <= max_length:
        raise ValueError(f"stride={stride} must be in 1..{max_length} (the window length).")
    ids = tokenizer.encode(text)
    n_bytes = len(text.encode("utf-8"))
    if len(ids) < 2:
        raise ValueError(f"The text has {len(ids)} token(s); perplexity needs at least 2.")
    windows = sliding_windows(len(ids), max_length, stride)
    nll, count = 0.0, 0
    bar = tqdm(total=len(windows), desc="perplexity", disable=not progress, dynamic_ncols=True)
    with autocast(model.device, precision, model.dtype):
        k = 0
        while k < len(windows):
            length = windows[k][1] - windows[k][0]
            group = [w for w in windows[k : k + batch_size] if w[1] - w[0] == length]
            x = torch.tensor([ids[b:e] for b, e, _ in group], device=model.device)
            logp = F.log_softmax(model(x).logits.float(), dim=-1)
            for r, (_, _, first) in enumerate(group):
                tgt = x[r, first:]
                nll -= float(logp[r, first - 1 : -1].gather(-1, tgt[:, None]).sum())
                count += tgt.numel()
            k += len(group)
            bar.update(len(group))
    bar.close()
    return {
        "perplexity": math.exp(nll / count),
        "bits_per_byte": nll / math.log(2) / n_bytes,
        "nll_per_token": nll / count,
        "tokens": len(ids),
        "scored_tokens": count,
        "bytes": n_bytes,
        "windows": len(windows),
        "max_length": max_length,
        "stride": stride,
    }
