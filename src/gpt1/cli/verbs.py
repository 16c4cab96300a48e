"""The `gpt1` command line: argument parsing, progress and messages over the library's functions; no logic of its own.

`VERBS` maps each verb to a pair: its parser (`add(subparsers)`) and its command (`run(args)`, which calls the
library). The training verbs are in `gpt1.cli.recipes`, their options generated from the recipes' config
dataclasses; the others declare theirs here, with the library's defaults. The library's log messages are shown on
stdout as the verbs run. User mistakes (bad values, missing files, corrupt checkpoints) end with one line on stderr
and exit code 2; set GPT1_DEBUG=1 to see the traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from gpt1.cli import recipes
from gpt1.cli.checks import (
    UserError,
    check_model_arg,
    check_out_dir,
    check_out_file,
    flagify,
    hub_message,
    parser_flags,
)
from gpt1.cli.parsers import add_settings
from gpt1.config import DEFAULT_TOKENIZER, preset_name
from gpt1.data.corpus import prepare_corpus
from gpt1.data.tasks import COLUMN_OPTIONS
from gpt1.evaluation.zero_shot import ZERO_SHOT_TASKS
from gpt1.recipes.finetune import TaskColumns
from gpt1.training.config import default_of

# Library argument names that a verb's flags spell differently (for `flagify`).
FLAG_ALIASES = {
    "generate": {"num_return_sequences": "--num-samples", "eos_token_id": "--eos-id"},
    "evaluate": {"stride": "--stride", "max_length": "--max-length"},
    "pretrain": {"warmup_steps": "--warmup", "warmup_fraction": "--warmup"},
}


# ---- shared helpers ---------------------------------------------------------------------------------
DTYPE_HELP = "float32, bfloat16, or int8 (weights quantised at load, float32 activations) (default: as stored)"


def parse_dtype(name: str | None, device: str | None = None):
    """The torch dtype for --dtype, or "int8" (weight-only quantised weights, float32 activations); float16 is
    refused on a CPU, where it runs 30-60x slower than float32."""
    import torch

    from gpt1.loading import DTYPE_NAMES as table

    if name in (None, "auto"):
        return None
    if name not in table:
        raise UserError(f"--dtype {name!r} is not supported; use float32, bfloat16, int8 or float16 (GPU only).")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if table[name] == torch.float16 and not str(device).startswith("cuda"):
        raise UserError("--dtype float16 is 30-60x slower than float32 on a CPU; use float32 or bfloat16 there.")
    return table[name]


# ---- info ---------------------------------------------------------------------------------------------
def _add_info(sub) -> None:
    p = sub.add_parser(
        "info",
        help="show a model's config and parameter count",
        description="Print a model's architecture (layers, width, heads, context, vocabulary) and its "
        "parameter count, without running it.",
    )
    p.add_argument("model", help="model dir, OpenAI release dir, hub id, or preset:NAME")


def _cmd_info(args) -> None:
    from gpt1.loading import load_model

    model = load_model(args.model)
    cfg = model.config
    print(f"model       {args.model}")
    for key in ("n_layer", "n_embd", "n_head", "n_positions", "vocab_size", "afn", "num_labels"):
        print(f"{key:<11} {getattr(cfg, key)}")
    n = model.num_parameters()
    print(f"parameters  {n:,} ({n / 1e6:.1f}M)")


# ---- tokenize -----------------------------------------------------------------------------------------
def _add_tokenize(sub) -> None:
    p = sub.add_parser(
        "tokenize",
        help="show how GPT-1's tokenizer splits a text",
        description="Print the BPE tokens (or ids) GPT-1's original tokenizer makes of a text; word "
        "ends show as </w>, and the newline token as \\n</w>.",
    )
    p.add_argument("text", help="the text (use - to read standard input)")
    p.add_argument("--ids", action="store_true", help="print token ids instead of token strings")
    p.add_argument("--tokenizer", default=None, help=f"tokenizer dir or hub id (default {DEFAULT_TOKENIZER})")


def _cmd_tokenize(args) -> None:
    from gpt1.loading import load_tokenizer

    tok = load_tokenizer(args.tokenizer)
    text = sys.stdin.read() if args.text == "-" else args.text
    if args.ids:
        print(" ".join(map(str, tok.encode(text))))
    else:  # the newline token printed as is would break the line: show it as \n, as the vocabulary spells it
        print(" ".join(t.replace("\n", "\\n") for t in tok.tokenize(text)))


# ---- convert ------------------------------------------------------------------------------------------
def _add_convert(sub) -> None:
    p = sub.add_parser(
        "convert",
        help="convert OpenAI's original npy release into an HF model dir",
        description="Read OpenAI's release (params_shapes.json + params_0..9.npy, and the vocabulary "
        "files when present) and write config.json + model.safetensors (+ tokenizer) that "
        "transformers and gpt1 load.",
    )
    p.add_argument("original_dir", help="the release dir (with params_shapes.json)")
    p.add_argument("out_dir", help="the HF model dir to write (created if missing)")


def _cmd_convert(args) -> None:
    from gpt1.checkpoint import is_original_release
    from gpt1.loading import convert_original

    if not is_original_release(Path(args.original_dir)):
        raise UserError(f"{args.original_dir}: not an OpenAI release dir (no params_shapes.json).")
    check_out_dir(args.out_dir, "OUT_DIR")
    out = convert_original(args.original_dir, args.out_dir)
    print(f"wrote {out}")


# ---- prepare ------------------------------------------------------------------------------------------
def _add_prepare(sub) -> None:
    p = sub.add_parser(
        "prepare",
        help="tokenize a corpus into uint16 train.bin / val.bin shards for pre-training",
        description="Tokenize documents (text files, folders, JSONL/CSV/Parquet records or a hub "
        "dataset) once, ending each with <|endoftext|>, into flat train.bin / val.bin "
        "shards that `gpt1 pretrain --data OUT` reads. Unchanged input reuses the shards.",
    )
    p.add_argument("--data", nargs="+", required=True, help="text files, folders, JSONL/CSV/Parquet, or a hub dataset")
    p.add_argument("--out", required=True, help="output dir (train.bin, val.bin, meta.json, tokenizer files)")
    p.add_argument("--tokenizer", default=None, help=f"tokenizer dir or hub id (default {DEFAULT_TOKENIZER})")
    p.add_argument(
        "--vocab-size",
        type=int,
        default=None,
        help="learn a GPT-1-style BPE of this many entries on the corpus instead of using --tokenizer "
        "(saved beside the shards; e.g. 8000 for small CPU models)",
    )
    p.add_argument(
        "--text-column",
        default=default_of(prepare_corpus, "text_column"),
        help="column holding the text in JSONL/CSV/Parquet/hub data",
    )
    p.add_argument(
        "--val-fraction",
        type=float,
        default=default_of(prepare_corpus, "val_fraction"),
        help="share of text held out for validation",
    )
    p.add_argument("--num-proc", type=int, default=os.cpu_count() or 1, help="tokenizer worker processes")
    p.add_argument(
        "--seed", type=int, default=default_of(prepare_corpus, "seed"), help="seed of the train/validation split"
    )
    p.add_argument("--force", action="store_true", help="re-tokenize even if matching shards exist")


def _cmd_prepare(args) -> None:
    from gpt1.loading import load_tokenizer

    check_out_dir(args.out)
    if args.vocab_size is not None:
        if args.tokenizer:
            raise UserError("--vocab-size learns a new vocabulary; it cannot be combined with --tokenizer.")
        if args.vocab_size < 16:
            raise UserError(f"--vocab-size {args.vocab_size} is too small; use at least a few hundred (e.g. 8000).")
    tok = None if args.vocab_size is not None else load_tokenizer(args.tokenizer)
    prepare_corpus(
        args.data,
        args.out,
        tok,
        text_column=args.text_column,
        val_fraction=args.val_fraction,
        num_proc=args.num_proc,
        seed=args.seed,
        force=args.force,
        vocab_size=args.vocab_size,
    )


# ---- serve --------------------------------------------------------------------------------------------
def _add_serve(sub) -> None:
    from gpt1.serving.app import serve

    p = sub.add_parser(
        "serve",
        help="OpenAI-compatible HTTP API (/v1/completions, streaming) and a web playground",
        description="Serve a model over OpenAI's completions API (POST /v1/completions, streaming, "
        "GET /v1/models, /health, /metrics) with continuous batching, and a web playground at /. "
        "Completions stop at a fine-tuned run's end-of-text token (the request field "
        "ignore_eos turns that off).",
    )
    p.add_argument("--model", required=True, help="model dir, hub id, or preset:NAME (random weights)")
    host = default_of(serve, "host")
    p.add_argument(
        "--host",
        default=host,
        help=f"address to bind (default {host}: this machine only; 0.0.0.0 exposes the API and the "
        "playground to every network this machine is on: set an API key)",
    )
    port, max_batch, max_queue = (default_of(serve, k) for k in ("port", "max_batch", "max_queue"))
    p.add_argument("--port", type=int, default=port, help=f"TCP port to listen on (default {port})")
    p.add_argument(
        "--max-batch", type=int, default=max_batch, help=f"most sequences decoded together (default {max_batch})"
    )
    p.add_argument(
        "--max-queue", type=int, default=max_queue, help=f"most requests waiting; more get 503 (default {max_queue})"
    )
    p.add_argument("--tokenizer", default=None, help="tokenizer dir or hub id (default: the model's own)")
    p.add_argument("--dtype", default=None, help=DTYPE_HELP)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available, else cpu)")
    p.add_argument("--name", default=None, help="model name the API reports (default: the model dir's name)")
    p.add_argument(
        "--api-key",
        action="append",
        default=None,
        metavar="KEY",
        help="require 'Authorization: Bearer KEY' on every path but /health and the playground page (repeat for "
        "several keys); default: the env var GPT1_API_KEY (commas between keys), which `ps` does not show",
    )
    p.add_argument(
        "--cors-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="let browser pages from ORIGIN (scheme://host[:port], or *) call the API; repeatable (default: none)",
    )


def _cmd_serve(args) -> None:
    from gpt1.runtime import resolve_device
    from gpt1.serving.app import serve
    from gpt1.serving.security import api_keys_from, check_cors_origins

    check_model_arg(args.model)
    api_keys = api_keys_from(args.api_key, os.environ)
    cors_origins = check_cors_origins(args.cors_origin)
    device = resolve_device(args.device)
    serve(
        args.model,
        host=args.host,
        port=args.port,
        max_batch=args.max_batch,
        max_queue=args.max_queue,
        tokenizer=args.tokenizer,
        dtype=parse_dtype(args.dtype, device),
        device=device,
        name=args.name,
        announce=lambda banner: print(banner, flush=True),
        api_keys=api_keys,
        cors_origins=cors_origins,
    )


def _task_columns(args) -> dict:
    """The column options given (evaluate's --text-column ... --label-column)."""
    return {k: getattr(args, k) for k in COLUMN_OPTIONS if getattr(args, k, None) is not None}


# ---- evaluate -----------------------------------------------------------------------------------------
def _add_evaluate(sub) -> None:
    from gpt1.evaluation.evaluate import evaluate

    p = sub.add_parser(
        "evaluate",
        help="task metrics of a fine-tuned model, zero-shot heuristics, or perplexity / bits per byte",
        description="Three modes: a fine-tuned model on --task/--data (metric table + predictions); --zero-shot NAME "
        "(the paper's §5 heuristics with the LM alone); --perplexity FILE (sliding window).",
    )
    p.add_argument("--model", required=True, help="run dir, model dir or hub id")
    p.add_argument("--task", help="the task (default: the one the model was fine-tuned on)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--zero-shot", choices=ZERO_SHOT_TASKS, help=f"one of {', '.join(ZERO_SHOT_TASKS)}")
    mode.add_argument("--perplexity", metavar="FILE", help="a UTF-8 text file")
    p.add_argument("--data", help="task file or folder (default: the task's hub dataset)")
    split, batch_size = default_of(evaluate, "split"), default_of(evaluate, "batch_size")
    p.add_argument("--split", default=split, help=f"split to read from a task folder or hub (default {split})")
    p.add_argument("--calibration-data", help="zero-shot cola: labelled data to choose the threshold on")
    p.add_argument("--tokenizer", help="tokenizer dir or hub id (default: the model's)")
    p.add_argument(
        "--batch-size",
        type=int,
        default=batch_size,
        help=f"examples (or windows) per forward pass (default {batch_size})",
    )
    p.add_argument("--stride", type=int, help="perplexity: tokens between window starts (default: half the window)")
    p.add_argument("--max-length", type=int, help="perplexity: window length (default: the model's context)")
    p.add_argument("--max-examples", type=int, help="evaluate only the first N examples")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available, else cpu)")
    p.add_argument("--dtype", default=None, help=DTYPE_HELP)
    p.add_argument("--output", help="write the metrics and predictions to this JSON file")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    add_settings(p, TaskColumns)


def _cmd_evaluate(args) -> None:
    from gpt1.data.readers import read_text_file
    from gpt1.evaluation.evaluate import evaluate
    from gpt1.runtime import resolve_device

    if args.perplexity is None and args.data is None and args.zero_shot == "dprd":
        raise UserError("--zero-shot dprd needs --data (CSV/JSONL with sentence, option1, option2, answer).")
    for name in ("batch_size", "max_examples"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} {getattr(args, name)} is invalid; use 1 or more.")
    # Everything that can be checked before the (possibly long) evaluation is checked first.
    if args.output:
        check_out_file(args.output, "--output")
    if args.perplexity is not None:
        read_text_file(args.perplexity, "--perplexity")
    device = resolve_device(args.device)
    result = evaluate(
        args.model,
        args.task,
        args.data,
        split=args.split,
        zero_shot=args.zero_shot,
        perplexity=args.perplexity,
        tokenizer=args.tokenizer,
        calibration_data=args.calibration_data,
        batch_size=args.batch_size,
        stride=args.stride,
        max_length=args.max_length,
        max_examples=args.max_examples,
        progress=args.progress,
        device=device,
        dtype=parse_dtype(args.dtype, device),
        **_task_columns(args),
    )
    rows = [(k, v) for k, v in result.items() if isinstance(v, (int, float, str)) and not isinstance(v, bool)]
    width = max(len(k) for k, _ in rows)
    print(f"{'metric':<{width}}  value")
    for k, v in rows:
        print(f"{k:<{width}}  {v:.4f}" if isinstance(v, float) else f"{k:<{width}}  {v}")
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(result, indent=1, default=float) + "\n")
        print(f"wrote {args.output}")


# ---- generate ------------------------------------------------------------------------------------------
def _add_generate(sub) -> None:
    from gpt1.inference.generate import generate, generate_text

    p = sub.add_parser(
        "generate",
        help="continue a prompt (KV-cache greedy, sampling or beam search)",
        description="Continue one or more prompts with a model: sampling by default (--temperature, "
        "--top-k, --top-p), or --greedy, or --num-beams B. A fine-tuned run dir stops at "
        "its own end-of-text token.",
    )
    p.add_argument(
        "--model", required=True, help="model dir, hub id, or preset:NAME (random weights; needs --tokenizer)"
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", action="append", help="prompt text (repeat for a batch)")
    src.add_argument("--prompt-file", help="file with one prompt per non-empty line (- for standard input)")
    new_tokens = default_of(generate_text, "max_new_tokens")
    p.add_argument(
        "--max-new-tokens", type=int, default=new_tokens, help=f"tokens to generate per prompt (default {new_tokens})"
    )
    p.add_argument("--greedy", action="store_true", help="greedy decoding (default: sampling)")
    d = {k: default_of(generate, k) for k in ("temperature", "repetition_penalty", "no_repeat_ngram_size")}
    d.update(num_beams=default_of(generate, "num_beams"), num_samples=default_of(generate, "num_return_sequences"))
    p.add_argument(
        "--temperature",
        type=float,
        default=d["temperature"],
        help=f"sampling temperature, >= 0 (default {d['temperature']})",
    )
    p.add_argument("--top-k", type=int, default=None, help="sample among the k most likely tokens (0 or unset = off)")
    p.add_argument("--top-p", type=float, default=None, help="nucleus sampling: smallest set reaching p, in (0, 1]")
    p.add_argument(
        "--repetition-penalty",
        type=float,
        default=d["repetition_penalty"],
        help=f"HF's repetition penalty, > 0 ({d['repetition_penalty']} = off)",
    )
    p.add_argument(
        "--no-repeat-ngram-size",
        type=int,
        default=d["no_repeat_ngram_size"],
        help=f"never repeat an n-gram of this size ({d['no_repeat_ngram_size']} = off)",
    )
    p.add_argument(
        "--num-beams", type=int, default=d["num_beams"], help="beam search with this many beams (implies --greedy)"
    )
    p.add_argument(
        "--num-samples",
        type=int,
        default=d["num_samples"],
        help=f"continuations per prompt (default {d['num_samples']})",
    )
    p.add_argument("--stop", action="append", default=None, help="stop at this string (repeatable)")
    p.add_argument(
        "--eos-id",
        type=int,
        action="append",
        default=None,
        help="stop at this token id (repeatable; default: config extra 'eos_token_id' if the model has one)",
    )
    p.add_argument("--seed", type=int, default=None, help="random seed: the same seed gives the same samples")
    p.add_argument("--stream", action="store_true", help="print the continuation token by token")
    p.add_argument(
        "--truncate-left",
        action="store_true",
        help="drop the oldest prompt tokens when prompt + new tokens would pass the model's context",
    )
    p.add_argument("--tokenizer", default=None, help="tokenizer dir or hub id (default: the model's own)")
    p.add_argument("--dtype", default=None, help=DTYPE_HELP)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available, else cpu)")


def _cmd_generate(args) -> None:
    from gpt1.data.readers import read_text_file
    from gpt1.inference.generate import check_generation_settings, generate_text, stream_text
    from gpt1.loading import load
    from gpt1.runtime import resolve_device

    if args.prompt_file is not None:
        text = sys.stdin.read() if args.prompt_file == "-" else read_text_file(args.prompt_file, "--prompt-file")
        prompts = [line for line in text.splitlines() if line.strip()]
        if not prompts:
            raise UserError(f"--prompt-file {args.prompt_file}: no prompts (the file has no non-empty line).")
    else:
        prompts = args.prompt
    kwargs = dict(
        max_new_tokens=args.max_new_tokens,
        do_sample=not args.greedy and args.num_beams == 1,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        repetition_penalty=args.repetition_penalty,
        no_repeat_ngram_size=args.no_repeat_ngram_size,
        num_beams=args.num_beams,
        num_return_sequences=args.num_samples,
        eos_token_id=args.eos_id,
        stop=args.stop,
        seed=args.seed,
        truncate_left=args.truncate_left,
    )
    check_generation_settings(**kwargs)  # every value, before a model is loaded (or downloaded)
    if args.stream and (len(prompts) > 1 or args.num_samples > 1 or args.num_beams > 1):
        raise UserError("--stream prints one continuation: give one prompt, --num-samples 1 and --num-beams 1.")
    device = resolve_device(args.device)
    dtype = parse_dtype(args.dtype, device)
    if preset_name(args.model) is not None:
        check_model_arg(args.model)
        if args.tokenizer is None:
            raise UserError("--model preset:NAME has no tokenizer of its own; pass --tokenizer DIR.")
    model, tokenizer = load(args.model, args.tokenizer, device=device, dtype=dtype)
    if args.eos_id is None:  # a fine-tuned run dir knows its end-of-text id
        kwargs["eos_token_id"] = model.config.extra.get("eos_token_id")
    if args.stream:
        for piece in stream_text(model, tokenizer, prompts[0], **kwargs):
            print(piece, end="", flush=True)
        print()
        return
    texts = generate_text(model, tokenizer, prompts, **kwargs)
    if len(texts) == 1:
        print(texts[0])
        return
    for i, text in enumerate(texts):
        p, n = divmod(i, args.num_samples)
        print(f"=== prompt {p + 1}" + (f", sample {n + 1}" if args.num_samples > 1 else "") + " ===")
        print(text)


# ---- quantize -----------------------------------------------------------------------------------------
def _add_quantize(sub) -> None:
    p = sub.add_parser(
        "quantize",
        help="save an int8 (weight-only) copy of a model for fast CPU inference",
        description="Store every linear layer and the tied embedding / LM head as int8 with per-channel scales "
        "and write config.json + model.safetensors (+ tokenizer) to OUT; generate, evaluate and serve load it "
        "as int8 without quantising again; training verbs refuse it.",
    )
    p.add_argument("model", help="model dir, run dir, OpenAI release dir, hub id or preset:NAME")
    p.add_argument("out", help="the model dir to write (created if missing)")


def _cmd_quantize(args) -> None:
    from gpt1.loading import quantize_checkpoint

    check_model_arg(args.model, "MODEL")
    check_out_dir(args.out, "OUT")
    print(f"wrote {quantize_checkpoint(args.model, args.out)}")


# ---- lm-eval ------------------------------------------------------------------------------------------
LM_EVAL_MISSING = 'lm-eval is not installed: pip install "gpt1[eval]"'


def _add_lm_eval(sub) -> None:
    p = sub.add_parser(
        "lm-eval",
        help="run EleutherAI's lm-evaluation-harness on a model (the gpt1 adapter and the GPT-1 task pack)",
        description="Evaluate a model with lm-evaluation-harness's own simple_evaluate, through its model "
        "'gpt1' (GPT-1's tokenizer, gpt1's scoring and decoder), and print lm-eval's table. The GPT-1 task pack "
        "(gpt1_sst2, gpt1_cola, gpt1_race_middle, gpt1_race_high, gpt1_story_cloze, gpt1_dprd, gpt1_snli, "
        "gpt1_scitail, gpt1_stsb) is always included. Flags are named as lm-eval's own CLI names them.",
    )
    p.add_argument("--model", required=True, help="run dir, model dir, hub id, or preset:NAME (with --tokenizer)")
    p.add_argument(
        "--tasks", required=True, nargs="+", help="task names, comma- or space-separated (gpt1_* or lm-eval's)"
    )
    p.add_argument(
        "--include_path", "--include-path", action="append", default=[], metavar="DIR", help="more task YAMLs"
    )
    p.add_argument(
        "--task_data",
        "--task-data",
        action="append",
        default=[],
        metavar="KEY=PATH",
        help="local data of a pack task (sst2, cola, race, story_cloze, dprd, snli, scitail, stsb), e.g. "
        "sst2=glue/SST-2 (default: the env var GPT1_DATA_KEY, else the task's hub dataset); repeatable",
    )
    p.add_argument("--num_fewshot", "--num-fewshot", type=int, default=None, metavar="K", help="few-shot examples")
    p.add_argument(
        "--limit", type=float, default=None, metavar="N", help="examples per task (a count, or a fraction < 1)"
    )
    p.add_argument("--batch_size", "--batch-size", type=int, default=16, help="sequences per forward (default 16)")
    p.add_argument("--output_path", "--output-path", metavar="P", help="write the results JSON (a .json file or a dir)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available, else cpu)")
    p.add_argument("--dtype", default=None, help=DTYPE_HELP)
    p.add_argument("--tokenizer", default=None, help="tokenizer dir or hub id (default: the model's own)")
    p.add_argument(
        "--model_args",
        "--model-args",
        default=None,
        metavar="K=V,...",
        help="more options of the gpt1 model: precision=fp32, max_length=N, stride=N, max_gen_toks=N",
    )


def _cmd_lm_eval(args) -> None:
    try:
        from lm_eval.utils import make_table, simple_parse_args_string

        from gpt1.lm_eval.run import parse_task_data, run, write_results
    except ModuleNotFoundError as e:
        if (e.name or "").split(".")[0] != "lm_eval":
            raise
        raise UserError(LM_EVAL_MISSING) from None
    from gpt1.runtime import resolve_device

    tasks = [t for part in args.tasks for t in part.split(",") if t]
    if args.batch_size < 1:
        raise UserError(f"--batch_size {args.batch_size} is invalid; use 1 or more.")
    if args.num_fewshot is not None and args.num_fewshot < 0:
        raise UserError(f"--num_fewshot {args.num_fewshot} is invalid; use 0 or more.")
    if args.limit is not None and (args.limit <= 0 or args.limit >= 1 and args.limit != int(args.limit)):
        raise UserError(f"--limit {args.limit:g} is invalid; use a count (1 or more) or a fraction between 0 and 1.")
    if args.output_path:
        out = Path(args.output_path)
        check_out_file(str(out if out.suffix == ".json" else out / "results.json"), "--output_path")
    if preset_name(args.model) is not None:
        check_model_arg(args.model)
        if args.tokenizer is None:
            raise UserError("--model preset:NAME has no tokenizer of its own; pass --tokenizer DIR.")
    device = resolve_device(args.device)
    parse_dtype(args.dtype, device)  # refuse a bad --dtype before loading; the adapter takes its name
    results = run(
        args.model,
        tasks,
        include_path=args.include_path,
        num_fewshot=args.num_fewshot,
        limit=args.limit,
        batch_size=args.batch_size,
        device=device,
        dtype=args.dtype,
        tokenizer=args.tokenizer,
        task_data=parse_task_data(args.task_data),
        model_args=simple_parse_args_string(args.model_args) if args.model_args else None,
    )
    print(make_table(results))
    if args.output_path:
        print(f"wrote {write_results(results, args.output_path)}")


# ---- entry point -----------------------------------------------------------------------------------------
# verb: (add its parser to the subparsers, run it), in the order `gpt1 --help` lists them: the first minute's
# commands, then the paper's two stages, then serving.
VERBS: dict[str, tuple[Callable, Callable]] = {
    "demo": (recipes.add_demo, recipes.cmd_demo),
    "generate": (_add_generate, _cmd_generate),
    "info": (_add_info, _cmd_info),
    "tokenize": (_add_tokenize, _cmd_tokenize),
    "convert": (_add_convert, _cmd_convert),
    "quantize": (_add_quantize, _cmd_quantize),
    "prepare": (_add_prepare, _cmd_prepare),
    "pretrain": (recipes.add_pretrain, recipes.cmd_pretrain),
    "finetune-lm": (recipes.add_finetune_lm, recipes.cmd_finetune_lm),
    "finetune": (recipes.add_finetune, recipes.cmd_finetune),
    "evaluate": (_add_evaluate, _cmd_evaluate),
    "reproduce": (recipes.add_reproduce, recipes.cmd_reproduce),
    "serve": (_add_serve, _cmd_serve),
    "lm-eval": (_add_lm_eval, _cmd_lm_eval),
}
COMMANDS = list(VERBS)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gpt1", description="GPT-1: load, generate, pre-train, fine-tune, evaluate and serve."
    )
    parser.add_argument("--version", action="version", version=f"gpt1 {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add, _ in VERBS.values():
        add(sub)
    return parser


def _version() -> str:
    """The installed package's version, read without importing torch (so `gpt1 --version` is instant)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("gpt1")
    except PackageNotFoundError:
        return "unknown (not installed)"


def verb_parser(parser: argparse.ArgumentParser, verb: str) -> argparse.ArgumentParser:
    """The subparser of `verb` in `build_parser()`'s parser."""
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return subparsers.choices[verb]


def error_line(args: argparse.Namespace, parser: argparse.ArgumentParser, e: BaseException) -> str:
    """The one line a failed verb prints: the message with Python argument names as this verb's flags."""
    from gpt1.hub import HubUnavailable

    if isinstance(e, HubUnavailable):
        message = hub_message(args, e)
    elif isinstance(e, OSError) and e.filename and e.strerror:  # e.g. a disk that filled up mid-run
        message = f"{e.filename}: {e.strerror}."
    else:
        message = str(e)
    flags = parser_flags(verb_parser(parser, args.command), FLAG_ALIASES.get(args.command))
    return f"gpt1 {args.command}: error: {flagify(' '.join(message.split()), flags)}"


class _Console(logging.Handler):
    """The library's messages as the command's output: on stdout, above any progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm.auto import tqdm

            tqdm.write(self.format(record), file=sys.stdout)  # sys.stdout as it is now (tests capture it)
            sys.stdout.flush()
        except Exception:
            self.handleError(record)


@contextlib.contextmanager
def library_messages() -> Iterator[None]:
    """Show the `gpt1` loggers' INFO and above while a verb runs (the library itself never prints)."""
    logger = logging.getLogger("gpt1")
    handler, level = _Console(), logger.level
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 0
    try:
        with library_messages():
            VERBS[args.command][1](args)
    except KeyboardInterrupt:
        print("gpt1: interrupted", file=sys.stderr)
        return 130
    except (UserError, ValueError, OSError) as e:  # OSError: missing, unreadable or unwritable files, full disks
        if os.environ.get("GPT1_DEBUG"):
            raise
        print(error_line(args, parser, e), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
