"""Task heads on top of `GPT` for the paper's four input transformations (§3.3), and the fine-tuning loss.

Every function takes `input_ids` of shape (B, S, T) — S sequences per example: 1 for classification/entailment,
2 for similarity (both orders), K for multiple choice — or (B, T) for S = 1, and `extract_positions` (B, S) (or (B,))
giving the index of each sequence's `[extract]` token. The final hidden state there goes through classifier dropout
(`config.summary_first_dropout`, one mask per example shared by its S sequences, as the original's noise_shape) and
`model.task_head`, the linear layer HF's DoubleHeads model calls `multiple_choice_head.summary`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from gpt1.model.gpt import GPT
from gpt1.model.losses import task_loss


@dataclass
class HeadOutput:
    """Head outputs of one batch, plus the final hidden states (B*S, T, C) the auxiliary LM loss is computed from."""

    logits: torch.Tensor  # (B, num_labels), (B,) for a regression, (B, K) multiple-choice scores
    hidden_states: torch.Tensor


def _unwrap(model) -> GPT:
    """The `GPT` inside DDP / torch.compile wrappers (the head and config live there)."""
    while not isinstance(model, GPT):
        model = getattr(model, "module", None) or model._orig_mod
    return model


def _as_3d(input_ids: torch.Tensor, extract_positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if input_ids.dim() == 2:
        input_ids = input_ids.unsqueeze(1)
    if extract_positions.dim() == 1:
        extract_positions = extract_positions.unsqueeze(1)
    if input_ids.dim() != 3 or extract_positions.shape != input_ids.shape[:2]:
        raise ValueError(
            f"input_ids must be (batch, seqs, T) or (batch, T) with extract_positions (batch, seqs) or (batch,); "
            f"got {tuple(input_ids.shape)} and {tuple(extract_positions.shape)}."
        )
    T = input_ids.shape[-1]
    if bool((extract_positions < 0).any()) or bool((extract_positions >= T).any()):
        raise ValueError(
            f"extract_positions must lie in 0..{T - 1} (the sequence length); got {extract_positions.tolist()}."
        )
    return input_ids, extract_positions


def extract_states(
    model, input_ids: torch.Tensor, extract_positions: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Final hidden states at the extract tokens (B, S, C), and all final hidden states (B*S, T, C).

    Right padding needs no attention mask: attention is causal, so real tokens never see the padding after them.
    `logits_to_keep=1` skips the full-vocabulary LM head here; the LM loss computes it only on real tokens.
    """
    input_ids, extract_positions = _as_3d(input_ids, extract_positions)
    B, S, T = input_ids.shape
    hidden = model(input_ids.reshape(B * S, T), logits_to_keep=1).hidden_states
    flat = extract_positions.reshape(B * S).to(hidden.device)
    states = hidden[torch.arange(B * S, device=hidden.device), flat].reshape(B, S, -1)
    return states, hidden


def _head(model, states: torch.Tensor) -> torch.Tensor:
    """Classifier dropout with one mask per example (shared across its sequences), then the linear task head."""
    gpt = _unwrap(model)
    if gpt.task_head is None:
        raise ValueError(
            "The model has no task head: build it with GPT1Config(num_labels=N) or gpt1.recipes.finetune.add_task_head."
        )
    p = gpt.config.summary_first_dropout
    if gpt.training and p > 0:
        keep = F.dropout(torch.ones_like(states[:, :1]), p, training=True)  # (B, 1, C): same mask for all S
        states = states * keep
    return gpt.task_head(states)


def classification_logits(model, input_ids: torch.Tensor, extract_positions: torch.Tensor) -> torch.Tensor:
    """(B, num_labels) logits for `[start] text [extract]` sequences (B, T) or (B, 1, T); (B,) for a regression head."""
    return _classification(model, input_ids, extract_positions).logits


def entailment_logits(model, input_ids: torch.Tensor, extract_positions: torch.Tensor) -> torch.Tensor:
    """(B, num_labels) logits for `[start] premise [delim] hypothesis [extract]` sequences: one sequence, as classification."""
    return _classification(model, input_ids, extract_positions).logits


def similarity_logits(model, input_ids: torch.Tensor, extract_positions: torch.Tensor) -> torch.Tensor:
    """(B, num_labels) logits, or (B,) scores for a regression head, from (B, 2, T): both orders' extract states
    are added element-wise before the head, so swapping the two texts cannot change the output."""
    return _similarity(model, input_ids, extract_positions).logits


def multiple_choice_scores(model, input_ids: torch.Tensor, extract_positions: torch.Tensor) -> torch.Tensor:
    """(B, K) scores, one per `[start] context [delim] answer_k [extract]` sequence of (B, K, T); softmax over K gives
    the choice probabilities. The same quantity as HF `OpenAIGPTDoubleHeadsModel(...).mc_logits`."""
    return _multiple_choice(model, input_ids, extract_positions).logits


def _squeeze_regression(model, logits: torch.Tensor) -> torch.Tensor:
    return logits.squeeze(-1) if _unwrap(model).config.num_labels == 1 else logits


def _classification(model, input_ids, extract_positions) -> HeadOutput:
    states, hidden = extract_states(model, input_ids, extract_positions)
    if states.shape[1] != 1:
        raise ValueError(f"classification/entailment take one sequence per example; got {states.shape[1]}.")
    return HeadOutput(_squeeze_regression(model, _head(model, states)[:, 0]), hidden)


def _similarity(model, input_ids, extract_positions) -> HeadOutput:
    states, hidden = extract_states(model, input_ids, extract_positions)
    if states.shape[1] != 2:
        raise ValueError(
            f"similarity takes the two orders of each pair, (batch, 2, T); got {states.shape[1]} sequences."
        )
    return HeadOutput(_squeeze_regression(model, _head(model, states.sum(1, keepdim=True))[:, 0]), hidden)


def _multiple_choice(model, input_ids, extract_positions) -> HeadOutput:
    states, hidden = extract_states(model, input_ids, extract_positions)
    logits = _head(model, states)
    if logits.shape[-1] != 1:
        raise ValueError(
            f"multiple choice needs a task head with one output (num_labels=1); this one has {logits.shape[-1]}."
        )
    return HeadOutput(logits.squeeze(-1), hidden)


HEADS = {
    "classification": _classification,
    "entailment": _classification,
    "similarity": _similarity,
    "multiple_choice": _multiple_choice,
}


def task_forward(model, kind: str, input_ids: torch.Tensor, extract_positions: torch.Tensor) -> HeadOutput:
    """Head outputs for a task of `kind` (classification, entailment, similarity, multiple_choice)."""
    if kind not in HEADS:
        raise ValueError(f"Unknown task kind {kind!r}; use one of {', '.join(HEADS)}.")
    return HEADS[kind](model, input_ids, extract_positions)


def sequence_lm_loss(
    model, hidden_states: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """Per-sequence LM loss (B*S,): mean next-token cross-entropy over each sequence's real tokens.

    As OpenAI's finetune-transformer-lm: targets are positions 1..len-1 of each sequence (the `[delim]` and
    `[extract]` tokens included, `[start]` never predicted), summed and divided by that sequence's count, so
    short and long sequences weigh the same. Logits are computed on real positions only (cheap for padded batches).
    """
    gpt = _unwrap(model)
    ids = input_ids.reshape(-1, input_ids.shape[-1])
    mask = attention_mask.reshape(ids.shape).bool()
    target_mask = mask[:, 1:]
    rows, cols = target_mask.nonzero(as_tuple=True)
    logits = gpt.lm_head(hidden_states[rows, cols]).float()  # predictions made at position t for token t+1
    nll = F.cross_entropy(logits, ids[rows, cols + 1], reduction="none")
    per_seq = torch.zeros(ids.shape[0], device=nll.device, dtype=nll.dtype).index_add_(0, rows, nll)
    return per_seq / target_mask.sum(1).clamp(min=1).to(per_seq.dtype)


def finetune_loss(
    model, batch: dict, kind: str, lm_coef: float = 0.5, regression: bool = False
) -> tuple[torch.Tensor, dict]:
    """The paper's L3 = L2 (task) + lm_coef * L1 (LM), as the original: mean task loss over examples plus lm_coef times
    the mean over all sequences (every choice, both orders) of each sequence's own mean token loss. `lm_coef=0` skips
    the LM head entirely. Returns the loss and its parts (detached) for logging."""
    out = task_forward(model, kind, batch["input_ids"], batch["extract_positions"])
    t_loss = task_loss(out.logits, batch["targets"], regression)
    parts = {"task_loss": t_loss.detach()}
    if lm_coef:
        l_loss = sequence_lm_loss(model, out.hidden_states, batch["input_ids"], batch["attention_mask"]).mean()
        parts["lm_loss"] = l_loss.detach()
        return t_loss + lm_coef * l_loss, parts
    return t_loss, parts


def predictions(logits: torch.Tensor, regression: bool = False) -> torch.Tensor:
    """Predicted class / choice ids, or the regression scores themselves."""
    return logits.float() if regression else logits.argmax(-1)


def add_task_head(model: GPT, num_labels: int, initializer_range: float | None = None) -> GPT:
    """Give `model` a fresh linear task head of `num_labels` outputs (N(0, 0.02) weights, zero bias, as the original)
    unless it already has one of that size (e.g. loaded from a fine-tuned run dir)."""
    if num_labels < 1:
        raise ValueError(f"num_labels={num_labels} must be >= 1.")
    head = model.task_head
    if head is not None and head.out_features == num_labels:
        return model
    std = model.config.initializer_range if initializer_range is None else initializer_range
    head = torch.nn.Linear(model.config.n_embd, num_labels, device=model.device, dtype=model.dtype)
    torch.nn.init.normal_(head.weight, mean=0.0, std=std)
    torch.nn.init.zeros_(head.bias)
    model.task_head = head
    model.config.num_labels = num_labels
    return model
