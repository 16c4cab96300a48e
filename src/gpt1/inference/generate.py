"""Generation for GPT-1: `generate` (ids in, ids out), `generate_text` and `stream_text` (text in, text out).

Argument names follow `transformers`' `generate` so users can move over without relearning:
- `generate(model, input_ids, attention_mask=None, max_new_tokens=20, ...) -> torch.LongTensor | GenerateOutput`
  (also `GPT.generate`): greedy, multinomial sampling, beam search; left-padded batches; stop ids and strings.
- `generate_text(model, tokenizer, prompt_or_prompts, ...) -> str | list[str]`: prompts in, continuations out.
- `stream_text(model, tokenizer, prompt, ...) -> Iterator[str]`: the continuation of one prompt, piece by piece.
- `check_generation_settings(**kwargs)`: `generate`'s ValueError for bad settings, without a model.

Conventions: left padding with per-row positions (padding never changes a row's result); a row stops on its own at
an eos id or a stop string and is then filled with `pad_token_id`; `seed` makes sampling reproducible (a private
`torch.Generator`). GPT-1 has no start-of-text token, so an empty prompt is an error unless `start_token_id` is
given. The pieces live in `sampling` (parameters, processors, the sampler), `decoding` (prefill, `Decoder`, stop
rules) and `beam`; their public names are importable from here too.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from gpt1.inference.beam import beam_search
from gpt1.inference.decoding import Decoder, left_pad, prepare_inputs
from gpt1.inference.sampling import (
    SamplingParams,
    apply_repetition_penalty,
    apply_temperature,
    as_id_tuple,
    ban_repeated_ngrams,
    top_k_filter,
    top_p_filter,
)

if TYPE_CHECKING:
    from gpt1.model.gpt import GPT

__all__ = [
    "Decoder",
    "GenerateOutput",
    "apply_repetition_penalty",
    "apply_temperature",
    "ban_repeated_ngrams",
    "check_generation_settings",
    "generate",
    "generate_text",
    "stream_text",
    "top_k_filter",
    "top_p_filter",
]


def _params(**kwargs) -> SamplingParams:
    """`generate`'s settings as one checked record, with the rule only `generate` has (its beams know no text)."""
    s = SamplingParams(**kwargs)
    if s.num_beams > 1 and s.stop:
        raise ValueError("stop strings are not supported with beam search; use eos_token_id.")
    return s


def check_generation_settings(max_new_tokens: int = 20, truncate_left: bool = False, **kwargs) -> None:
    """Raise the ValueError `generate` would raise for these settings, without a model (so a CLI can refuse a bad
    value before it loads or downloads one). Keywords are `generate`'s; token ids are checked against the model
    later, when its vocabulary is known."""
    _params(max_new_tokens=max_new_tokens, **kwargs)


@dataclass
class GenerateOutput:
    """`generate(..., return_dict_in_generate=True)`: ids, and for beam search HF's `sequences_scores`."""

    sequences: torch.Tensor  # (B * num_return_sequences, prompt + generated), rows finished early padded
    sequences_scores: torch.Tensor | None = None  # beam search: length-normalised log-probability
    num_generated: torch.Tensor | None = None  # (rows,) tokens generated per row (eos included)


def generate(
    model: GPT,
    input_ids,
    attention_mask=None,
    max_new_tokens: int = 20,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    repetition_penalty: float = 1.0,
    no_repeat_ngram_size: int = 0,
    num_beams: int = 1,
    length_penalty: float = 1.0,
    num_return_sequences: int = 1,
    eos_token_id: int | Sequence[int] | None = None,
    pad_token_id: int | None = None,
    stop: str | Sequence[str] | None = None,
    tokenizer=None,
    seed: int | None = None,
    truncate_left: bool = False,
    return_dict_in_generate: bool = False,
) -> torch.Tensor | GenerateOutput:
    """Continue `input_ids` (B, T) (left-padded, with `attention_mask`, for prompts of different lengths).

    Returns the prompts followed by the new tokens, (B * num_return_sequences, T + generated), rows that stopped
    early filled with `pad_token_id` (default: the first eos id, else 0) — the layout HF's `generate` returns.
    `stop` strings need `tokenizer`; `truncate_left` drops the oldest prompt tokens instead of refusing a prompt
    that leaves no room for `max_new_tokens` in the context.
    """
    s = _params(
        max_new_tokens=max_new_tokens,
        do_sample=do_sample,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        repetition_penalty=repetition_penalty,
        no_repeat_ngram_size=no_repeat_ngram_size,
        num_beams=num_beams,
        length_penalty=length_penalty,
        num_return_sequences=num_return_sequences,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
        stop=stop,
        seed=seed,
    )
    if s.num_beams > 1:
        s.check_vocab(model.config.vocab_size)
        ids, mask = prepare_inputs(model, input_ids, attention_mask, max_new_tokens, truncate_left)
        seqs, scores, lengths = beam_search(model, ids, mask, s)
        if return_dict_in_generate:
            return GenerateOutput(sequences=seqs, sequences_scores=scores, num_generated=lengths)
        return seqs
    dec = Decoder(model, input_ids, attention_mask, params=s, tokenizer=tokenizer, truncate_left=truncate_left)
    for _ in dec:
        pass
    seqs = dec.sequences()
    if return_dict_in_generate:
        counts = torch.tensor([len(t) for t in dec.tokens], device=seqs.device)
        return GenerateOutput(sequences=seqs, num_generated=counts)
    return seqs


# ---- text in, text out -------------------------------------------------------------------------------------------------
def _encode_prompts(tokenizer, prompts: Sequence[str], start_token_id: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded (B, T) ids and mask for `prompts`; `start_token_id`, when given, is put before each prompt."""
    encoded = []
    for p in prompts:
        if not isinstance(p, str):
            raise ValueError(f"prompt {p!r} is not a string.")
        ids = ([start_token_id] if start_token_id is not None else []) + tokenizer.encode(p)
        if not ids:
            raise ValueError(
                "The prompt is empty; GPT-1 has no start-of-text token, so give some text (or a start_token_id)."
            )
        encoded.append(ids)
    return left_pad(encoded)


def _without_beams(kwargs: dict) -> dict:
    """`generate`'s keywords minus the beam-only ones, for `Decoder` (one beam)."""
    return {k: v for k, v in kwargs.items() if k not in ("num_beams", "length_penalty")}


def generate_text(
    model: GPT,
    tokenizer,
    prompt_or_prompts: str | Sequence[str],
    max_new_tokens: int = 50,
    start_token_id: int | None = None,
    **kwargs,
) -> str | list[str]:
    """Continuations of one prompt (a str back) or several (a list back, `num_return_sequences` per prompt in order).

    Keyword arguments are `generate`'s; the returned text leaves out the prompt, a final eos token and everything
    from the first `stop` string on.
    """
    single = isinstance(prompt_or_prompts, str)
    prompts = [prompt_or_prompts] if single else list(prompt_or_prompts)
    if not prompts:
        raise ValueError("No prompts given; pass a string or a non-empty list of strings.")
    ids, mask = _encode_prompts(tokenizer, prompts, start_token_id)
    if kwargs.get("num_beams", 1) != 1:  # `generate` refuses num_beams < 1 instead of quietly decoding greedily
        out = generate(model, ids, mask, max_new_tokens=max_new_tokens, return_dict_in_generate=True, **kwargs)
        T = ids.shape[1]
        eos = as_id_tuple(kwargs.get("eos_token_id"))
        rows = [out.sequences[i, T : T + int(n)].tolist() for i, n in enumerate(out.num_generated)]
        texts = [tokenizer.decode(r[:-1] if r and r[-1] in eos else r) for r in rows]  # beams know no stop strings
    else:
        dec = Decoder(model, ids, mask, max_new_tokens=max_new_tokens, tokenizer=tokenizer, **_without_beams(kwargs))
        for _ in dec:
            pass
        texts = [dec.row_text(b).text for b in range(dec.batch_size)]
    return texts[0] if single and len(texts) == 1 else texts


def stream_text(
    model: GPT,
    tokenizer,
    prompt: str,
    max_new_tokens: int = 50,
    start_token_id: int | None = None,
    **kwargs,
) -> Iterator[str]:
    """The continuation of one prompt as text pieces, yielded as tokens are generated; their concatenation is what
    `generate_text` returns for the same arguments. Greedy or sampling (not beam search)."""
    if kwargs.get("num_beams", 1) != 1 or kwargs.get("num_return_sequences", 1) != 1:
        raise ValueError("stream_text generates one sequence: num_beams and num_return_sequences must be 1.")
    ids, mask = _encode_prompts(tokenizer, [prompt], start_token_id)
    dec = Decoder(model, ids, mask, max_new_tokens=max_new_tokens, tokenizer=tokenizer, **_without_beams(kwargs))
    while not dec.done:
        dec.step()
        if dec.done:
            break
        if piece := dec.row_text(0).pop_safe():
            yield piece
    if rest := dec.row_text(0).pop_rest():
        yield rest
