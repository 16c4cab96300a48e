"""`gpt1` as a model of EleutherAI's lm-evaluation-harness: a `TemplateLM` registered as "gpt1".

It scores with gpt1's own pieces, so lm-eval sees exactly what `gpt1 evaluate` sees: GPT-1's tokenizer (ftfy +
spaCy + BPE, not transformers' fast one), `score_tokens` for log-likelihoods, perplexity's sliding windows for
rolling log-likelihoods and gpt1's KV-cache decoder for generation.

GPT-1 has no start-of-text token, so nothing is put before a text: an empty context scores its continuation from
the second token on (the first is the context), and a rolling log-likelihood covers every token after the first —
the convention of `gpt1 evaluate --perplexity` and of the zero-shot heuristics.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.models.utils import Collator, handle_stop_sequences, normalize_gen_kwargs
from tqdm.auto import tqdm

from gpt1.evaluation.perplexity import sliding_windows
from gpt1.inference.generate import generate_text
from gpt1.inference.scoring import next_token_logprobs, score_tokens
from gpt1.loading import load, load_tokenizer
from gpt1.model.gpt import GPT
from gpt1.runtime import PRECISIONS, resolve_device

log = logging.getLogger(__name__)

# Generation settings of lm-eval's `gen_kwargs` that gpt1's decoder takes under the same name.
GEN_KWARGS = ("top_k", "top_p", "repetition_penalty", "no_repeat_ngram_size", "seed")


def _batch_size(value: Any) -> int:
    """lm-eval's batch_size (an int, a digit string, or "auto"/"auto:N", which here means the default 16)."""
    if value is None or str(value).startswith("auto"):
        return 16
    try:
        size = int(value)
    except ValueError:
        raise ValueError(f"batch_size={value!r} is not a number; use a positive integer (or auto).") from None
    if size < 1:
        raise ValueError(f"batch_size={value!r} must be 1 or more.")
    return size


@register_model("gpt1")
class GPT1LM(TemplateLM):
    """lm-eval's model "gpt1": `--model gpt1 --model_args pretrained=DIR[,tokenizer=...,dtype=...,device=...]`.

    `pretrained` is anything `gpt1.loading.load` reads (a run or HF dir, a hub id, OpenAI's npy release,
    preset:NAME) or a loaded `GPT`; `tokenizer` a dir / hub id / `Tokenizer` (default: the model's own).
    `precision` is the scoring precision ("auto": bf16 autocast where the hardware has it; "fp32" for exact
    scores), `max_length`/`stride` the rolling windows (default: the model's context, half of it).
    """

    def __init__(
        self,
        pretrained: Any = None,
        tokenizer: Any = None,
        dtype: Any = None,
        device: str | None = None,
        batch_size: int | str | None = 16,
        max_batch_size: int | None = None,
        precision: str = "auto",
        max_length: int | None = None,
        stride: int | None = None,
        max_gen_toks: int = 256,
        **unknown: Any,
    ) -> None:
        super().__init__()  # max_batch_size: lm-eval passes it along with batch_size; a fixed batch size needs none
        if unknown:
            raise ValueError(
                f"model_args {', '.join(sorted(unknown))} are not options of the gpt1 model; it takes pretrained, "
                "tokenizer, dtype, device, batch_size, precision, max_length, stride and max_gen_toks."
            )
        if pretrained is None:
            raise ValueError("The gpt1 model needs model_args pretrained=DIR (a run dir, HF dir, hub id or preset).")
        if precision not in PRECISIONS:  # checked before a model is loaded
            raise ValueError(f"precision={precision!r} is not supported; use one of {', '.join(PRECISIONS)}.")
        if isinstance(pretrained, GPT):
            if tokenizer is None:
                raise ValueError("Pass tokenizer= with a loaded GPT model (a dir, hub id or Tokenizer).")
            self.model, self.tok = pretrained.eval(), load_tokenizer(tokenizer)
            if device is not None:
                self.model.to(resolve_device(device))
        else:
            self.model, self.tok = load(pretrained, tokenizer, device=resolve_device(device), dtype=dtype)
        self.model.eval()
        self.tokenizer = None  # lm-eval reads `tokenizer` for chat templates; GPT-1 has none
        self.pretrained = str(pretrained) if isinstance(pretrained, (str, os.PathLike)) else type(pretrained).__name__
        self.batch_size = _batch_size(batch_size)
        self.precision = precision
        n_ctx = self.model.config.n_positions
        self._max_length = int(max_length) if max_length is not None else n_ctx
        if not 2 <= self._max_length <= n_ctx:
            raise ValueError(f"max_length={max_length} must be in 2..{n_ctx} (the model's context).")
        self.stride = int(stride) if stride is not None else max(1, self._max_length // 2)
        if not 1 <= self.stride <= self._max_length:
            raise ValueError(f"stride={stride} must be in 1..{self._max_length} (the window length).")
        self.max_gen_toks = int(max_gen_toks)
        eos = self.model.config.extra.get("eos_token_id")  # a fine-tuned run's end-of-text token, if it has one
        self._eot = int(eos) if eos is not None else None

    # ---- what lm-eval asks of a TemplateLM ----------------------------------------------------------------------
    @property
    def eot_token_id(self) -> int | None:
        """The run's end-of-text id (a fine-tuned LM's), else None: GPT-1 itself has none."""
        return self._eot

    @property
    def prefix_token_id(self) -> None:
        """None: no token is put before a text (see the module docstring)."""
        return None

    @property
    def max_length(self) -> int:
        return self._max_length

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def tokenizer_name(self) -> str:
        return f"gpt1:{self.pretrained}"

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs: Any) -> list[int]:
        """GPT-1's tokenizer (it has no special tokens to add)."""
        return self.tok.encode(string)

    def tok_decode(self, tokens, skip_special_tokens: bool = True) -> str:
        return self.tok.decode(tokens, skip_special_tokens=skip_special_tokens)

    # ---- log-likelihoods ------------------------------------------------------------------------------------------
    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        """log p(continuation | context) and whether it is the greedy continuation; an empty context makes the
        continuation's first token the context (nothing is put before a text)."""
        new_reqs = []
        for context, continuation in [req.args for req in requests]:
            if context == "":
                ids = self.tok_encode(continuation)
                context_enc, continuation_enc = ids[:1], ids[1:]
            else:
                context_enc, continuation_enc = self._encode_pair(context, continuation)
            new_reqs.append(((context, continuation), context_enc, continuation_enc))
        return self._loglikelihood_tokens(new_reqs, disable_tqdm=disable_tqdm)

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs: Any) -> list[tuple[float, bool]]:
        """Score (context, continuation) token pairs in length-sorted batches; the context is cut from the left so
        both fit the model's positions (the continuation keeps at most all but one of them). One-token
        continuations of the same context (the choices of most multiple-choice tasks) share one forward of it, as
        HF's backend does, with the logits of its last position only."""
        n_ctx = self.model.config.n_positions
        seqs, slots, contexts, context_slots, plan = [], {}, [], {}, []
        for _, context, continuation in requests:
            cont = list(continuation)[-(n_ctx - 1) :]
            ctx = list(context)[max(0, len(context) - (n_ctx - len(cont))) :]
            if not cont or not ctx:  # nothing to score (an empty continuation, or a one-token text)
                plan.append(None)
            elif len(cont) == 1:  # scored from the distribution after its context
                plan.append(("next", context_slots.setdefault(tuple(ctx), len(context_slots)), cont[0]))
                if len(context_slots) > len(contexts):
                    contexts.append(ctx)
            else:
                key = (tuple(ctx), tuple(cont))
                if key not in slots:  # identical requests are scored once
                    slots[key] = len(seqs)
                    seqs.append(ctx + cont)
                plan.append(("seq", slots[key], len(ctx)))
        progress = not disable_tqdm
        scored = score_tokens(
            self.model,
            seqs,
            batch_size=self.batch_size,
            precision=self.precision,
            progress=progress,
            desc="loglikelihood",
        )
        wanted: dict[int, set[int]] = {}
        for step in plan:
            if step is not None and step[0] == "next":
                wanted.setdefault(step[1], set()).add(step[2])
        following = self._next_token_scores(contexts, wanted, progress)
        answers = []
        for (request, _, _), step in zip(requests, plan):
            if step is None:
                answer = (0.0, True)
            elif step[0] == "next":
                answer = following[step[1], step[2]]
            else:
                s, start = scored[step[1]], step[2]
                answer = (float(sum(s.logprobs[start:])), all(s.greedy[start:]))
            if request is not None:
                self.cache_hook.add_partial("loglikelihood", request, answer)
            answers.append(answer)
        return answers

    def _next_token_scores(
        self, contexts: list[list[int]], wanted: dict[int, set[int]], progress: bool
    ) -> dict[tuple[int, int], tuple[float, bool]]:
        """{(context index, token): (log p(token | context), whether it is the most likely)} for the `wanted`
        tokens after each context."""
        if not contexts:
            return {}
        logp = next_token_logprobs(
            self.model, contexts, batch_size=self.batch_size, precision=self.precision, progress=progress
        )
        best = logp.max(-1).values
        return {
            (i, token): (float(logp[i, token]), bool(logp[i, token] >= best[i]))  # a tie with the best is greedy
            for i, tokens in wanted.items()
            for token in tokens
        }

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """log p(text), every token after the first scored once, in `gpt1 evaluate --perplexity`'s windows."""
        texts = [req.args[0] for req in requests]
        seqs, owner, firsts = [], [], []
        for k, text in enumerate(tqdm(texts, desc="windows", disable=disable_tqdm)):
            ids = self.tok_encode(text)
            for begin, end, first in sliding_windows(len(ids), self.max_length, self.stride):
                seqs.append(ids[begin:end])
                owner.append(k)
                firsts.append(first)
        scored = score_tokens(
            self.model,
            seqs,
            batch_size=self.batch_size,
            precision=self.precision,
            progress=not disable_tqdm,
            desc="loglikelihood_rolling",
        )
        totals = [0.0] * len(texts)
        for k, first, s in zip(owner, firsts, scored):
            totals[k] += float(sum(s.logprobs[first:]))
        for text, total in zip(texts, totals):
            self.cache_hook.add_partial("loglikelihood_rolling", (text,), total)
        return totals

    # ---- generation ---------------------------------------------------------------------------------------------
    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Continuations by gpt1's decoder (greedy unless the task samples), cut at the first stop string; prompts
        longer than the context lose their oldest tokens."""
        eos_text = self.tok_decode([self._eot], skip_special_tokens=False) if self._eot is not None else None
        n_ctx = self.model.config.n_positions
        collator = Collator(
            [req.args for req in requests],
            sort_fn=lambda r: (-len(self.tok_encode(r[0])), r[0]),
            group_by="gen_kwargs",
            group_fn=lambda r: r[1],
        )
        out = []
        bar = tqdm(total=len(requests), desc="generate_until", disable=disable_tqdm)
        for chunk in collator.get_batched(n=self.batch_size):
            contexts, all_kwargs = zip(*chunk)
            kwargs = dict(normalize_gen_kwargs(dict(all_kwargs[0]), self.max_gen_toks))
            until = handle_stop_sequences(kwargs.pop("until", None), eos=eos_text)
            max_new = int(kwargs.pop("max_gen_toks"))
            if max_new >= n_ctx:
                log.warning(
                    "max_gen_toks=%d is more than the model's %d positions allow; using %d", max_new, n_ctx, n_ctx - 1
                )
                max_new = n_ctx - 1
            do_sample = bool(kwargs.pop("do_sample", False))
            temperature = float(kwargs.pop("temperature", 0.0))
            settings = {k: kwargs.pop(k) for k in GEN_KWARGS if k in kwargs}
            if kwargs:
                log.warning("gen_kwargs %s are not gpt1 generation settings; ignored", ", ".join(sorted(kwargs)))
            texts = generate_text(
                self.model,
                self.tok,
                list(contexts),
                max_new_tokens=max_new,
                do_sample=do_sample,
                temperature=temperature if do_sample else 1.0,
                stop=[s for s in until if s] or None,
                eos_token_id=self._eot,
                truncate_left=True,
                **settings,
            )
            for context, text in zip(contexts, texts):
                self.cache_hook.add_partial("generate_until", (context, all_kwargs[0]), text)
            out.extend(texts)
            bar.update(len(contexts))
        bar.close()
        return collator.get_original(out)
