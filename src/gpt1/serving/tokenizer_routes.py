"""The tokenizer endpoints of `gpt1 serve`, under vLLM's names (`/tokenize`, `/detokenize`, `/tokenizer_info`), so
that clients such as lm-eval's `tokenizer_backend=remote` tokenize with GPT-1's own BPE instead of a look-alike."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from gpt1.serving.protocol import BadRequest, DetokenizeRequest, TokenizeRequest, not_served, token_string

__all__ = ["add_tokenizer_routes", "encode_with_specials", "eos_token"]

END_OF_TEXT = "<|endoftext|>"  # what `gpt1 prepare` and `finetune-lm` add to end documents


def eos_token(tokenizer, eos_ids: Sequence[int]) -> str | None:
    """The run's end-of-text token as text: the one the server stops at, else `<|endoftext|>` when the tokenizer has
    it (a pre-training run's document end), else None (OpenAI's GPT-1 has none)."""
    if eos_ids:
        return token_string(tokenizer, eos_ids[0])
    return END_OF_TEXT if END_OF_TEXT in getattr(tokenizer, "special_tokens", {}) else None


def encode_with_specials(tokenizer, text: str, encode: Callable[[str], list[int]]) -> list[int]:
    """Token ids of `text` with the tokenizer's added special tokens written in it read as those tokens (as HF's
    tokenizers and vLLM do), the text between them through `encode`."""
    specials = sorted(getattr(tokenizer, "special_tokens", {}), key=len, reverse=True)
    if not specials or not any(s in text for s in specials):
        return encode(text)
    ids: list[int] = []
    for part in re.split("(" + "|".join(map(re.escape, specials)) + ")", text):
        if part in tokenizer.special_tokens:
            ids.append(tokenizer.special_tokens[part])
        elif part:
            ids += encode(part)
    return ids


def add_tokenizer_routes(
    app: FastAPI, tokenizer, config, model_name: str, eos_ids: Sequence[int], encode: Callable[[str], list[int]]
) -> None:
    """Register `/tokenize`, `/detokenize` and `/tokenizer_info` on `app` (`encode` is the server's locked encoder)."""
    n_positions, vocab_size = config.n_positions, config.vocab_size

    def check_model(name: str | None) -> None:
        if name not in (None, model_name):
            raise not_served(name, model_name)

    @app.post("/tokenize")
    async def tokenize(body: TokenizeRequest):
        check_model(body.model)
        ids = await run_in_threadpool(encode_with_specials, tokenizer, body.prompt, encode)
        out = {"count": len(ids), "max_model_len": n_positions, "tokens": ids, "token_strs": None}
        if body.return_token_strs:
            out["token_strs"] = [token_string(tokenizer, t) for t in ids]
        return out

    @app.post("/detokenize")
    async def detokenize(body: DetokenizeRequest):
        check_model(body.model)
        bad = [t for t in body.tokens if not 0 <= t < vocab_size]
        if bad:
            raise BadRequest(
                400,
                f"tokens has id(s) {', '.join(map(str, bad[:5]))}{' ...' if len(bad) > 5 else ''} outside this "
                f"model's vocabulary 0..{vocab_size - 1}.",
                "tokens",
            )
        return {"prompt": tokenizer.decode(body.tokens)}

    @app.get("/tokenizer_info")
    async def tokenizer_info():
        eos = eos_token(tokenizer, eos_ids)
        return {
            "tokenizer_class": "gpt1.Tokenizer",
            "model_max_length": n_positions,
            "max_model_len": n_positions,
            "vocab_size": vocab_size,
            "eos_token": eos,
            "eos_token_id": eos_ids[0] if eos_ids else tokenizer.special_tokens.get(eos) if eos else None,
            "bos_token": None,  # GPT-1 has no start-of-text token
            "pad_token": None,
            "unk_token": token_string(tokenizer, tokenizer.unk_id),
            "additional_special_tokens": list(tokenizer.special_tokens),
            "add_bos_token": False,
            "chat_template": None,
        }
