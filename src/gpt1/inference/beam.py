"""Beam search on the KV cache: HF's (4.57) vectorised algorithm, with the same candidates, finishing rule and scores."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from gpt1.inference.decoding import prefill
from gpt1.inference.sampling import SamplingParams, apply_repetition_penalty, ban_repeated_ngrams

if TYPE_CHECKING:
    from gpt1.model.gpt import GPT

__all__ = ["beam_search"]


@torch.inference_mode()
def beam_search(
    model: GPT, ids: torch.Tensor, mask: torch.Tensor, s: SamplingParams
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`s.num_beams` beams per left-padded prompt (B, T0); returns (sequences (B * n, T0 + generated), their
    length-normalised log-probabilities (B * n,), tokens generated per sequence (B * n,)), n = num_return_sequences."""
    B, T0 = ids.shape
    K, V = s.num_beams, model.config.vocab_size
    L = T0 + s.max_new_tokens
    dev = ids.device
    first = prefill(model, ids, mask, L, repeat=K)
    cache, logits, next_pos = first.cache, first.logits, first.next_pos
    rows = torch.arange(B, device=dev).repeat_interleave(K)
    hist_mask = torch.cat([mask.bool(), mask.new_ones((B, s.max_new_tokens)).bool()], 1)[rows]

    eos_ids = s.eos_token_id
    keep = max(2, 1 + len(eos_ids)) * K
    top_num_beam_mask = torch.arange(keep, device=dev) < K
    eos = torch.tensor(eos_ids, dtype=torch.long, device=dev) if eos_ids else None
    running = ids.new_full((B, K, L), s.pad_token_id)
    running[:, :, :T0] = ids[:, None, :]
    sequences = running.clone()
    running_scores = torch.zeros((B, K), dtype=torch.float, device=dev)
    running_scores[:, 1:] = -1e9  # all beams start equal: only the first may expand at step one
    beam_scores = torch.full((B, K), -1e9, dtype=torch.float, device=dev)
    lengths = torch.zeros((B, K), dtype=torch.long, device=dev)  # generated length of each finished hypothesis
    finished = torch.zeros((B, K), dtype=torch.bool, device=dev)
    improvable = torch.ones((B, 1), dtype=torch.bool, device=dev)
    cur = T0
    lp = s.length_penalty
    while True:
        log_probs = F.log_softmax(logits.float(), dim=-1)
        flat_hist = running[:, :, :cur].reshape(B * K, cur)
        if s.repetition_penalty != 1.0:
            log_probs = apply_repetition_penalty(log_probs, flat_hist, s.repetition_penalty, hist_mask[:, :cur])
        if s.no_repeat_ngram_size:
            log_probs = ban_repeated_ngrams(log_probs, flat_hist, s.no_repeat_ngram_size, hist_mask[:, :cur])
        acc = (log_probs.view(B, K, V) + running_scores[:, :, None]).view(B, K * V)
        top_lp, top_idx = torch.topk(acc, keep)
        src, tok = top_idx // V, top_idx % V
        top_seqs = torch.take_along_dim(running, src[:, :, None], dim=1)
        top_seqs[:, :, cur] = tok
        hits = torch.zeros_like(tok, dtype=torch.bool) | (cur + 1 >= L)
        if eos is not None:
            hits |= torch.isin(tok, eos)
        # The best `K` candidates that did not stop keep running.
        run_lp = top_lp + hits.float() * -1e9
        nxt = torch.topk(run_lp, K)[1]
        running = torch.take_along_dim(top_seqs, nxt[:, :, None], dim=1)
        running_scores = torch.take_along_dim(run_lp, nxt, dim=1)
        origin = torch.take_along_dim(src, nxt, dim=1)
        # Candidates among the top K that stopped join the finished hypotheses if they beat the worst kept one.
        just = hits & top_num_beam_mask[None, :]
        norm = top_lp / ((cur + 1 - T0) ** lp)
        # (HF's early_stopping=True would also close full batches here; we keep its default, False.)
        norm = norm + (~improvable).float() * -1e9
        norm = norm + (~just).float() * -1e9
        merged_idx = torch.topk(torch.cat([beam_scores, norm], 1), K)[1]
        sequences = torch.take_along_dim(torch.cat([sequences, top_seqs], 1), merged_idx[:, :, None], dim=1)
        beam_scores = torch.take_along_dim(torch.cat([beam_scores, norm], 1), merged_idx, dim=1)
        lengths = torch.take_along_dim(
            torch.cat([lengths, torch.full_like(norm, cur + 1 - T0, dtype=torch.long)], 1), merged_idx, dim=1
        )
        finished = torch.take_along_dim(torch.cat([finished, just], 1), merged_idx, dim=1)
        cur += 1
        # HF's stopping heuristic (early_stopping=False): stop once no running beam can beat the worst finished one.
        best_running = running_scores[:, :1] / ((cur - T0) ** lp)
        worst_finished = torch.where(finished, beam_scores.min(dim=1, keepdim=True)[0], -1.0e9)
        improvable = improvable & (best_running > worst_finished).any(-1, keepdim=True)
        if not bool(improvable.any()) or bool(hits.all()):
            break
        flat_origin = (origin + torch.arange(B, device=dev)[:, None] * K).view(-1)
        cache.reorder(flat_origin)
        logits = model(
            running[:, :, cur - 1].reshape(-1, 1), position_ids=next_pos[:, None], cache=cache, logits_to_keep=1
        ).logits[:, -1]
        next_pos = next_pos + 1
    n = s.num_return_sequences
    sequences, beam_scores, lengths = sequences[:, :n].reshape(B * n, L), beam_scores[:, :n].reshape(-1), lengths[:, :n]
    sequences = sequences[:, : T0 + int(lengths.max())]
    return sequences, beam_scores, lengths.reshape(-1)
