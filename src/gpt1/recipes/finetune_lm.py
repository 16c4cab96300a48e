"""Causal-LM fine-tuning on a text dataset (e.g. jokes as `JOKE: <joke><|endoftext|>`), with the shared `Trainer`.

The end-of-text token is a real vocabulary entry (embedding grown, N(0, 0.02)); padding never enters the loss (-100)
nor attention (mask 0); each batch pads only to its own longest example, or `packing` fills whole blocks with whole
examples and `packed_lm_loss` keeps attention inside each example. Each evaluation logs val loss/perplexity and
appends a few sampled generations to `run_dir/samples.jsonl`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from gpt1.config import GPT1Config
from gpt1.data.text import (
    DEFAULT_TEMPLATE,
    EOS_TOKEN,
    DynamicPaddingSource,
    PackedSource,
    add_eos_token,
    check_template,
    eval_batches,
    read_texts,
    split_examples,
    tokenize_examples,
)
from gpt1.model.gpt import GPT, lm_loss

DEFAULT_TOKENIZER = "openai-community/openai-gpt"


def packed_lm_loss(model: nn.Module, batch: dict) -> tuple[torch.Tensor, int]:
    """LM loss on packed rows with attention kept inside each example (block-diagonal causal mask from `segment_ids`).

    `GPT.forward` takes only a key-padding mask, so this runs the same layers with a (B, 1, T, T) additive bias; for
    a row holding one example it is exactly `model(input_ids, attention_mask, labels)` (see the tests).
    """
    m = model.module if hasattr(model, "module") else model  # DDP / compiled wrappers
    m = getattr(m, "_orig_mod", m)
    ids, seg, labels = batch["input_ids"], batch["segment_ids"], batch["labels"]
    T = ids.shape[1]
    x = m.drop(m.tokens_embed(ids) + m.positions_embed(batch["position_ids"]))
    causal = torch.ones(T, T, dtype=torch.bool, device=ids.device).tril()
    allowed = causal[None] & (seg[:, :, None] == seg[:, None, :]) & (seg[:, None, :] > 0)
    allowed |= torch.eye(T, dtype=torch.bool, device=ids.device)[None]  # padding queries see themselves: no NaN rows
    bias = torch.zeros(allowed.shape, dtype=x.dtype, device=ids.device)
    bias.masked_fill_(~allowed, torch.finfo(x.dtype).min)
    bias = bias.unsqueeze(1)
    for i, block in enumerate(m.h):
        x = block(x, bias, None, i)
    loss = lm_loss(m.lm_head(x), labels)
    return loss, int((labels[:, 1:] != -100).sum())


def build_model_and_tokenizer(
    model: str | None, preset: str | None, tokenizer: str | None, model_overrides: dict | None = None
):
    """(GPT, Tokenizer) from a hub id / local dir / run dir (`model`), or random weights of `preset`."""
    from gpt1.tokenizer.bpe import Tokenizer

    if (model is None) == (preset is None):
        raise ValueError(
            "Give exactly one of --model (hub id, model dir or run dir) and --preset (tiny, mini, small, gpt1)."
        )
    tok = Tokenizer.from_pretrained(tokenizer or model or DEFAULT_TOKENIZER)
    if preset is not None:
        net = GPT(GPT1Config.from_preset(preset, **{**(model_overrides or {}), "vocab_size": len(tok)}))
    else:
        if model_overrides:
            raise ValueError("model_overrides apply to --preset models only; a --model keeps its saved architecture.")
        net = GPT.from_pretrained(model)
        if net.config.vocab_size < len(tok):
            net.resize_token_embeddings(len(tok))
    return net, tok


def _default_lr(lr, warmup_fraction, config, from_scratch: bool, steps: int) -> tuple[float, float]:
    if not from_scratch:
        return (6.25e-5 if lr is None else lr), (0.002 if warmup_fraction is None else warmup_fraction)
    from gpt1.config import scratch_lr

    good_lr, warmup = scratch_lr(config)
    return (good_lr if lr is None else lr), (min(0.2, warmup / steps) if warmup_fraction is None else warmup_fraction)


def finetune_lm(
    data,
    out: str | Path,
    *,
    model: str | None = None,
    preset: str | None = None,
    tokenizer: str | None = None,
    text_column: str | None = None,
    template: str = DEFAULT_TEMPLATE,
    eos: str = EOS_TOKEN,
    epochs: float | None = None,
    max_steps: int | None = None,
    batch_size: int = 16,
    lr: float | None = None,
    warmup_fraction: float | None = None,
    schedule: str = "linear",
    weight_decay: float = 0.01,
    grad_clip: float = 1.0,
    val_fraction: float = 0.05,
    max_val: int | None = 2000,
    packing: bool = False,
    max_length: int | None = None,
    sample_prompt: str | None = "JOKE:",
    num_samples: int = 3,
    sample_tokens: int = 40,
    temperature: float = 0.9,
    top_k: int | None = 40,
    eval_every: int | None = None,
    save_every: int | None = None,
    log_every: int = 10,
    eval_batch_size: int = 32,
    seed: int = 1234,
    precision: str = "auto",
    device: str = "auto",
    compile: bool = False,
    num_proc: int = 1,
    resume: str | None = None,
    progress: bool = True,
    model_overrides: dict | None = None,
    texts: list[str] | None = None,
    prepared: tuple | None = None,
) -> dict[str, Any]:
    """Fine-tune a causal LM on the `text_column` of `data` and write the run dir `out`; returns the final metrics.

    `texts` replaces reading `data` (the demo passes its corpus); `prepared` = (model, tokenizer) replaces loading.
    `lr` / `warmup_fraction` None: the paper's fine-tuning 6.25e-5 and 0.2% for weights given as `model`; for random
    weights (`preset`) the pre-training lr and warmup of the model's depth (`config.scratch_lr`, at most a fifth of
    the run), since 6.25e-5 barely moves a fresh model.
    """
    from gpt1.training.trainer import TrainConfig, Trainer, evaluate_lm

    if epochs is None and max_steps is None:
        epochs = 3.0
    if sample_prompt is not None and num_samples < 0:
        raise ValueError(f"--num-samples {num_samples} is invalid; use 0 or more.")
    check_template(template)
    if texts is None:  # read (and check the column) before loading any model: data mistakes fail in a second
        texts = read_texts(data, text_column)
    if not texts:
        raise ValueError(f"{data}: no non-empty texts in column {text_column or 'text'!r}.")
    torch.manual_seed(seed)  # a preset's initial weights and the new eos embedding row depend on the seed only
    net, tok = (
        prepared if prepared is not None else build_model_and_tokenizer(model, preset, tokenizer, model_overrides)
    )
    eos_id = add_eos_token(tok, net, eos)
    net.config.extra["lm_template"] = template
    context = net.config.n_positions
    if max_length is not None and not 2 <= max_length <= context:  # never cap a request to the context silently
        raise ValueError(
            f"--max-length {max_length} is outside this model's range: use 2..{context} (its context), "
            f"or leave it out for {context}."
        )
    limit = max_length or context
    examples, truncated = tokenize_examples(tok, texts, eos_id, template, limit, num_proc=num_proc, progress=progress)
    if truncated and progress:
        print(
            f"note: {truncated} of {len(examples)} examples were longer than {limit} tokens and were cut.", flush=True
        )
    train, val = split_examples(examples, val_fraction, seed)
    if max_val is not None and len(val) > max_val:
        val = val[:max_val]  # already a seeded random sample
    if packing:
        source = PackedSource(train, batch_size, limit, seed=seed)
    else:
        source = DynamicPaddingSource(train, batch_size, seed=seed)
    steps = max_steps or max(1, math.ceil(epochs * source.steps_per_epoch))
    eval_every = eval_every or max(1, min(source.steps_per_epoch, steps // 4 or 1))
    lr, warmup_fraction = _default_lr(lr, warmup_fraction, net.config, from_scratch=model is None, steps=steps)
    config = TrainConfig(
        lr=lr,
        warmup_steps=None,
        warmup_fraction=warmup_fraction,
        schedule=schedule,
        weight_decay=weight_decay,
        grad_clip=grad_clip,
        max_steps=max_steps,
        epochs=None if max_steps else epochs,
        eval_every=eval_every,
        save_every=save_every or eval_every,
        log_every=log_every,
        seed=seed,
        precision=precision,
        device=device,
        compile=compile,
        progress=progress,
    )
    out = Path(out)
    samples_path = out / "samples.jsonl"

    def evaluate_fn(m: GPT) -> dict[str, float]:
        return evaluate_lm(m, eval_batches(val, eval_batch_size)) if val else {}

    def on_eval(trainer: Trainer, metrics: dict) -> None:
        if not sample_prompt or num_samples == 0:
            return
        texts_out = sample(
            trainer.model,
            tok,
            sample_prompt,
            num_samples,
            eos_id,
            sample_tokens,
            temperature,
            top_k,
            seed + trainer.step,
        )
        shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()) or "samples (no validation set: --val-fraction 0)"
        print(f"\nstep {trainer.step}: {shown}", flush=True)
        with samples_path.open("a", encoding="utf-8") as f:
            for t in texts_out:
                print(f"  {sample_prompt} {t}", flush=True)
                f.write(json.dumps({"step": trainer.step, "prompt": sample_prompt, "text": t}) + "\n")

    run_config = {
        "kind": "finetune-lm",
        "data": [str(d) for d in data] if isinstance(data, (list, tuple)) else str(data),
        "model": model,
        "preset": preset,
        "tokenizer": tokenizer,
        "text_column": text_column,
        "template": template,
        "eos": eos,
        "eos_token_id": eos_id,
        "batch_size": batch_size,
        "packing": packing,
        "max_length": limit,
        "val_fraction": val_fraction,
        "max_val": max_val,
        "n_train": len(train),
        "n_val": len(val),
        "truncated": truncated,
        "sample_prompt": sample_prompt,
        "num_samples": num_samples,
        "epochs": epochs,
        "max_steps": max_steps,
        "model_config": net.config.to_hf_dict(),
    }
    trainer = Trainer(
        net,
        config,
        source,
        out,
        loss_fn=packed_lm_loss if packing else None,
        evaluate_fn=evaluate_fn if val or sample_prompt else None,
        on_eval=on_eval,
        tokenizer=tok,
        run_config=run_config,
    )
    result = trainer.fit(resume=resume)
    result["eos_token_id"] = eos_id
    return result


@torch.no_grad()
def sample(
    model: GPT,
    tokenizer,
    prompt: str,
    n: int,
    eos_id: int,
    max_new_tokens: int = 40,
    temperature: float = 0.9,
    top_k: int | None = 40,
    seed: int | None = None,
) -> list[str]:
    """`n` sampled continuations of `prompt`, each stopping at the end-of-text token (eval mode, restored after)."""
    from gpt1.inference.generate import generate_text

    was_training = model.training
    model.eval()
    try:
        room = model.config.n_positions - len(tokenizer.encode(prompt))
        out = generate_text(
            model,
            tokenizer,
            [prompt] * n,
            max_new_tokens=max(1, min(max_new_tokens, room)),
            do_sample=True,
            temperature=temperature,
            top_k=top_k,
            eos_token_id=eos_id,
            seed=seed,
        )
    finally:
        model.train(was_training)
    return [t.strip() for t in out]
