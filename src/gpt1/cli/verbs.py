"""The `gpt1` command line: argument parsing, progress and messages over the library's functions; no logic of its own.

Each verb is a pair: `_add_<verb>(subparsers)` declares its arguments, `_cmd_<verb>(args)` calls the library.
User mistakes (bad values, missing files, corrupt checkpoints) end with one line on stderr and exit code 2;
set GPT1_DEBUG=1 to see the traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from gpt1.cli.checks import (
    UserError,
    check_model_arg,
    check_out_dir,
    check_out_file,
    check_run_args,
    coerce_settings,
    flagify,
    hub_message,
    parser_flags,
)

DEFAULT_TOKENIZER = "openai-community/openai-gpt"
# Library argument names that a verb's flags spell differently (for `flagify`).
FLAG_ALIASES = {
    "generate": {"num_return_sequences": "--num-samples", "eos_token_id": "--eos-id"},
    "evaluate": {"stride": "--stride", "max_length": "--max-length"},
    "pretrain": {"warmup_steps": "--warmup", "warmup_fraction": "--warmup"},
}


# ---- shared helpers ---------------------------------------------------------------------------------
def load_tokenizer_for(model_or_path: str | None, tokenizer: str | None = None):
    """The tokenizer saved with a model (or the one named by --tokenizer)."""
    from gpt1.tokenizer.bpe import Tokenizer

    return Tokenizer.from_pretrained(tokenizer or model_or_path or DEFAULT_TOKENIZER)


def parse_dtype(name: str | None, device: str | None = None):
    """The torch dtype for --dtype; float16 is refused on a CPU, where it runs 30-60x slower than float32."""
    import torch

    if name in (None, "auto"):
        return None
    table = {
        "float32": torch.float32,
        "fp32": torch.float32,
        "bfloat16": torch.bfloat16,
        "bf16": torch.bfloat16,
        "float16": torch.float16,
        "fp16": torch.float16,
    }
    if name not in table:
        raise UserError(f"--dtype {name!r} is not supported; use float32, bfloat16 or float16 (GPU only).")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if table[name] == torch.float16 and not str(device).startswith("cuda"):
        raise UserError("--dtype float16 is 30-60x slower than float32 on a CPU; use float32 or bfloat16 there.")
    return table[name]


def report_run(verb: str, result: dict, summary: str) -> None:
    """Print a training verb's one-line outcome; after Ctrl-C, say how to resume and exit as interrupted."""
    print(f"{'interrupted' if result['interrupted'] else 'done'}: {summary}")
    if result["interrupted"]:
        print(f"resume with: gpt1 {verb} ... --out {result['run_dir']} --resume auto", file=sys.stderr)
        raise KeyboardInterrupt


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
    from gpt1.config import GPT1Config
    from gpt1.model.gpt import GPT

    if args.model.startswith("preset:"):
        model = GPT(GPT1Config.from_preset(args.model.split(":", 1)[1]))
    else:
        model = GPT.from_pretrained(args.model)
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
    tok = load_tokenizer_for(None, args.tokenizer)
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
    from gpt1.checkpoint import convert_original, is_original_release

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
    p.add_argument("--text-column", default="text", help="column holding the text in JSONL/CSV/Parquet/hub data")
    p.add_argument("--val-fraction", type=float, default=0.005, help="share of text held out for validation")
    p.add_argument("--num-proc", type=int, default=os.cpu_count() or 1, help="tokenizer worker processes")
    p.add_argument("--seed", type=int, default=1234, help="seed of the train/validation split")
    p.add_argument("--force", action="store_true", help="re-tokenize even if matching shards exist")


def _cmd_prepare(args) -> None:
    from gpt1.data.corpus import prepare_corpus

    check_out_dir(args.out)
    if args.vocab_size is not None:
        if args.tokenizer:
            raise UserError("--vocab-size learns a new vocabulary; it cannot be combined with --tokenizer.")
        if args.vocab_size < 16:
            raise UserError(f"--vocab-size {args.vocab_size} is too small; use at least a few hundred (e.g. 8000).")
    tok = None if args.vocab_size is not None else load_tokenizer_for(None, args.tokenizer)
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


# ---- pretrain -----------------------------------------------------------------------------------------
def _int_like(text: str) -> int:
    """Integers also written as 1e6 or 2_000_000 (token budgets are large)."""
    try:
        value = float(text.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number")
    if value != int(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number")
    return int(value)


def _add_pretrain(sub) -> None:
    p = sub.add_parser(
        "pretrain",
        argument_default=argparse.SUPPRESS,
        help="pre-train a GPT on unlabelled text (paper stage 1); flags override --config",
        description="Pre-train a GPT language model. Settings come from defaults, then --config (YAML/JSON), then "
        "flags; the resolved config is saved in RUN_DIR/run_config.json.",
    )
    p.add_argument("--data", nargs="+", help="text files, folders, JSONL/CSV/Parquet, a hub dataset, or a prepared dir")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--preset", help="start from random weights of a preset: gpt1, small, mini, tiny")
    which.add_argument("--model", help="continue from these weights (model/run dir or hub id)")
    p.add_argument("--config", help="YAML or JSON file of settings (keys as the flags, plus model_overrides: {...})")
    p.add_argument("--out", help="the run dir")
    p.add_argument("--max-steps", type=_int_like, help="optimizer steps to train")
    p.add_argument("--max-tokens", type=_int_like, help="tokens to train on (rounded up to whole steps)")
    p.add_argument("--epochs", type=float, help="passes over the training shard")
    p.add_argument("--batch-tokens", type=_int_like, help="global batch in tokens (default 32768 = 64 x 512)")
    p.add_argument("--micro-batch", type=int, help="sequences per process per micro-step (default: <= 8)")
    p.add_argument(
        "--lr", type=float, help="peak learning rate (default: by depth, 2.5e-4 for gpt1; README: Pre-training)"
    )
    p.add_argument(
        "--warmup",
        type=float,
        help="warmup steps, or a fraction of all steps if < 1 (default: by depth, 2000 for gpt1)",
    )
    p.add_argument("--schedule", choices=["cosine", "linear", "constant"], help="decay after warmup (default cosine)")
    p.add_argument("--weight-decay", type=float, help="decoupled weight decay on matrices (default 0.01)")
    p.add_argument("--grad-clip", type=float, help="global gradient-norm clip, 0 = off (default 1.0)")
    p.add_argument("--eval-every", type=int, help="steps between evaluations (default 500)")
    p.add_argument("--eval-blocks", type=int, help="validation blocks per evaluation (default 100)")
    p.add_argument("--save-every", type=int, help="steps between checkpoints (default 500)")
    p.add_argument("--keep-last", type=int, help="checkpoints kept (default 2)")
    p.add_argument("--log-every", type=int, help="steps between metrics rows (default 10)")
    p.add_argument("--precision", choices=["auto", "bf16", "fp32"], help="auto: bf16 autocast where supported")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument(
        "--tokenizer",
        help=f"tokenizer dir or hub id (default: the model's, else a prepared corpus's own, else {DEFAULT_TOKENIZER})",
    )
    p.add_argument("--val-fraction", type=float, help="share of text held out for validation (default 0.005)")
    p.add_argument("--num-proc", type=int, help="tokenizer worker processes (default 1)")
    p.add_argument("--text-column", help="text column of JSONL/CSV/Parquet/hub data (default text)")
    p.add_argument("--seed", type=int, help="seed of weights, data order and dropout (default 1234)")
    p.add_argument("--resume", help="'auto' (latest checkpoint in --out, if any) or a checkpoint path")
    p.add_argument("--devices", type=int, help="processes to launch with torchrun (GPUs, or CPU processes)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def _read_config_file(path: str) -> dict:
    """Settings from a YAML or JSON file, keys normalised to the flags' underscore names."""
    import yaml

    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"{path}: no such config file.")
    try:
        data = json.loads(file.read_text()) if file.suffix == ".json" else yaml.safe_load(file.read_text())
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        raise UserError(f"{path}: not valid {'JSON' if file.suffix == '.json' else 'YAML'} ({e}).".replace("\n", " "))
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of settings, got {type(data).__name__}.")
    return {k.replace("-", "_"): v for k, v in data.items()}


def _cmd_pretrain(args) -> None:
    from gpt1.recipes.pretrain import PRETRAIN_DEFAULTS, pretrain

    flags = {k: v for k, v in vars(args).items() if k not in ("command", "config")}
    from_file = {}
    if getattr(args, "config", None):  # typed and checked like the flags they stand for
        from_file = coerce_settings(
            _read_config_file(args.config), verb_parser(build_parser(), "pretrain"), args.config
        )
    settings = {**from_file, **flags}
    unknown = sorted(set(settings) - set(PRETRAIN_DEFAULTS))
    if unknown:
        raise UserError(
            f"unknown setting(s) {', '.join(unknown)} in {args.config}; known: {', '.join(PRETRAIN_DEFAULTS)}."
        )
    check_run_args(
        preset=settings.get("preset"), out=settings.get("out"), device=settings.get("device"), lr=settings.get("lr")
    )
    devices = int(settings.get("devices") or 1)
    if devices < 1:
        raise UserError(f"--devices {devices} is invalid; use 1 or more.")
    if devices > 1 and "WORLD_SIZE" not in os.environ:
        return _launch_torchrun(settings, devices)
    result = pretrain(**settings)
    if int(os.environ.get("RANK", 0)) != 0:
        return
    parts = [f"step {result['step']}", f"{result['tokens']:,} tokens"]
    for key, fmt in (("loss", ".4f"), ("val_loss", ".4f"), ("val_ppl", ".2f"), ("tokens_per_s", ",.0f")):
        if result.get(key) is not None:
            parts.append(f"{key} {result[key]:{fmt}}")
    report_run("pretrain", result, f"{', '.join(parts)}; run dir {result['run_dir']}")


def _launch_torchrun(settings: dict, devices: int) -> None:
    """Run `gpt1 pretrain` in `devices` processes under torchrun, after preparing the data once here."""
    import subprocess

    import torch

    from gpt1.recipes.pretrain import PRETRAIN_DEFAULTS, _load_tokenizer, prepare_data

    s = {**PRETRAIN_DEFAULTS, **settings}
    if not s["out"] or not s["data"]:
        raise UserError("--devices needs --data and --out.")
    on_gpu = torch.cuda.is_available() and s["device"] in ("auto", "cuda")
    if on_gpu and devices > torch.cuda.device_count():
        raise UserError(f"--devices {devices} is more than the {torch.cuda.device_count()} GPUs visible here.")
    prepare_data(s, _load_tokenizer(s))  # once, before the workers start: they reuse the shards
    out = Path(s["out"])
    out.mkdir(parents=True, exist_ok=True)
    launch = out / "launch_config.json"
    launch.write_text(json.dumps({**settings, "devices": devices}, indent=2, default=str) + "\n")
    env = dict(os.environ)
    if not on_gpu:  # split this machine's cores between the CPU processes
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // devices)))
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={devices}",
        "-m",
        "gpt1",
        "pretrain",
        "--config",
        str(launch),
    ]
    print("launching: " + " ".join(cmd), flush=True)
    rc = subprocess.call(cmd, env=env)
    if rc:
        raise UserError(f"torchrun exited with code {rc}; see the messages above.")


# ---- serve --------------------------------------------------------------------------------------------
def _add_serve(sub) -> None:
    p = sub.add_parser(
        "serve",
        help="OpenAI-compatible HTTP API (/v1/completions, streaming) and a web playground",
        description="Serve a model over OpenAI's completions API (POST /v1/completions, streaming, "
        "GET /v1/models, /health) with continuous batching, and a web playground at /. "
        "Completions stop at a fine-tuned run's end-of-text token (the request field "
        "ignore_eos turns that off).",
    )
    p.add_argument("--model", required=True, help="model dir, hub id, or preset:NAME (random weights)")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 exposes the API and the "
        "playground, without authentication, to every network this machine is on)",
    )
    p.add_argument("--port", type=int, default=8000, help="TCP port to listen on (default 8000)")
    p.add_argument("--max-batch", type=int, default=8, help="most sequences decoded together (default 8)")
    p.add_argument("--max-queue", type=int, default=64, help="most requests waiting; more get 503 (default 64)")
    p.add_argument("--tokenizer", default=None, help="tokenizer dir or hub id (default: the model's own)")
    p.add_argument("--dtype", default=None, help="float32 or bfloat16 (default: as stored)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available, else cpu)")
    p.add_argument("--name", default=None, help="model name the API reports (default: the model dir's name)")


def _cmd_serve(args) -> None:
    from gpt1.runtime import resolve_device
    from gpt1.serving.app import serve

    check_model_arg(args.model)
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
    )


# ---- finetune -----------------------------------------------------------------------------------------
# Named here rather than imported, so building the parser does not import torch (gpt1.data.tasks checks them too).
_FT_TASKS = ("rocstories", "sst2", "cola", "mrpc", "qqp", "stsb", "rte", "qnli", "mnli", "snli", "scitail", "race")
_ZERO_SHOT = ("sst2", "cola", "race", "rocstories", "dprd")


def _add_task_columns(p) -> None:
    g = p.add_argument_group(
        "columns of your own data (generic tasks: classification, entailment, similarity, multiple-choice)"
    )
    g.add_argument("--text-column", help="text (classification), premise or first text (default text)")
    g.add_argument("--text-pair-column", help="hypothesis or second text (default text_pair)")
    g.add_argument("--context-column", help="multiple choice: the context (default context)")
    g.add_argument("--question-column", help="multiple choice: a question appended to the context (optional)")
    g.add_argument(
        "--choice-columns", help="multiple choice: comma-separated answer columns, or one list column (default choices)"
    )
    g.add_argument("--label-column", help="the label: class name/id, score, or answer index (default label)")


def _task_columns(args) -> dict:
    cols = {
        k: getattr(args, k, None)
        for k in ("text_column", "text_pair_column", "context_column", "question_column", "label_column")
    }
    if getattr(args, "choice_columns", None):
        cols["choice_columns"] = [c.strip() for c in args.choice_columns.split(",") if c.strip()]
    return {k: v for k, v in cols.items() if v is not None}


def _add_run_options(p: argparse.ArgumentParser) -> None:
    """Precision, device, compile, tokenizer processes, resume and progress: the same for both fine-tuning verbs."""
    p.add_argument(
        "--precision",
        choices=["auto", "bf16", "fp32"],
        default="auto",
        help="auto (default): bf16 autocast where the hardware has bf16, else fp32",
    )
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: cuda when available, else cpu)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--num-proc", type=int, default=1, help="tokenizer worker processes")
    p.add_argument("--resume", help="'auto' (latest checkpoint in --out, if any) or a checkpoint path")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")


def _add_finetune(sub) -> None:
    p = sub.add_parser(
        "finetune",
        help="fine-tune on a task with the paper's input transformations and auxiliary LM loss (stage 2)",
        description="Discriminative fine-tuning (paper §3.2-3.3). Defaults are the paper's: lr 6.25e-5, batch 32, "
        "3 epochs, 0.2% linear warmup then linear decay, classifier dropout 0.1, --lm-coef 0.5.",
    )
    p.add_argument(
        "--task",
        required=True,
        help=f"one of: {', '.join(_FT_TASKS)}; or your own data: classification, "
        "entailment, similarity, multiple-choice",
    )
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--model", help="pre-trained weights: model/run dir or hub id (e.g. openai-community/openai-gpt)"
    )
    which.add_argument("--preset", help="random weights of a preset (gpt1, small, mini, tiny): no pre-training")
    p.add_argument("--data", help="task file or folder (GLUE's SST-2/ ...); default: the task's hub dataset")
    p.add_argument("--val-data", help="validation file (default: the folder's dev split, else --val-fraction of train)")
    p.add_argument("--val-fraction", type=float, default=0.1, help="share of train held out when there is no dev split")
    p.add_argument("--out", required=True, help="the run dir")
    p.add_argument("--tokenizer", help="tokenizer dir or hub id (default: the model's)")
    p.add_argument("--epochs", type=float, default=3.0, help="passes over the training data (default 3)")
    p.add_argument("--max-steps", type=int, help="optimizer steps instead of --epochs")
    p.add_argument("--batch-size", type=int, default=32, help="examples per step (default 32)")
    p.add_argument("--lr", type=float, default=6.25e-5, help="peak learning rate (default 6.25e-5)")
    p.add_argument(
        "--lm-coef", type=float, default=0.5, help="weight λ of the auxiliary LM loss; 0 = off (default 0.5)"
    )
    p.add_argument(
        "--warmup-fraction", type=float, default=0.002, help="linear warmup share of training (default 0.002)"
    )
    p.add_argument("--weight-decay", type=float, default=0.01, help="decoupled weight decay on matrices (default 0.01)")
    p.add_argument("--grad-clip", type=float, default=1.0, help="global gradient-norm clip, 0 = off (default 1.0)")
    p.add_argument("--clf-dropout", type=float, default=0.1, help="dropout before the task head (default 0.1)")
    p.add_argument("--eval-every", type=int, help="steps between validations (default: once per epoch)")
    p.add_argument("--save-every", type=int, help="steps between checkpoints (default: as --eval-every)")
    p.add_argument("--log-every", type=int, default=10, help="steps between metrics rows (default 10)")
    p.add_argument("--eval-batch-size", type=int, default=64, help="examples per validation batch (default 64)")
    p.add_argument("--max-train", type=int, help="use at most this many training examples (seeded sample)")
    p.add_argument("--max-val", type=int, help="use at most this many validation examples (seeded sample)")
    p.add_argument("--seed", type=int, default=42, help="seed of the split, data order, head init and dropout")
    _add_run_options(p)
    _add_task_columns(p)


def _cmd_finetune(args) -> None:
    from gpt1.recipes.finetune import finetune

    if args.max_steps is not None and args.max_steps < 1:
        raise UserError(f"--max-steps {args.max_steps} is invalid; use 1 or more.")
    check_run_args(preset=args.preset, out=args.out, device=args.device, lr=args.lr)
    result = finetune(
        args.task,
        args.data,
        args.out,
        model=args.model,
        preset=args.preset,
        tokenizer=args.tokenizer,
        val_data=args.val_data,
        val_fraction=args.val_fraction,
        epochs=args.epochs,
        max_steps=args.max_steps,
        batch_size=args.batch_size,
        lr=args.lr,
        lm_coef=args.lm_coef,
        warmup_fraction=args.warmup_fraction,
        weight_decay=args.weight_decay,
        grad_clip=args.grad_clip,
        clf_dropout=args.clf_dropout,
        eval_every=args.eval_every,
        save_every=args.save_every,
        log_every=args.log_every,
        eval_batch_size=args.eval_batch_size,
        max_train=args.max_train,
        max_val=args.max_val,
        seed=args.seed,
        precision=args.precision,
        device=args.device,
        compile=args.compile,
        resume=args.resume,
        progress=args.progress,
        num_proc=args.num_proc,
        **_task_columns(args),
    )
    main = result["main_metric"]
    last = f"{main} {result[main]:.4f}" if result.get(main) is not None else ""
    best = f", best {main} {result['best']:.4f} (in {result['run_dir']}/best)" if result.get("best") is not None else ""
    report_run("finetune", result, f"step {result['step']}, {last}{best}; validation: {result['validation']}")


# ---- evaluate -----------------------------------------------------------------------------------------
def _add_evaluate(sub) -> None:
    p = sub.add_parser(
        "evaluate",
        help="task metrics of a fine-tuned model, zero-shot heuristics, or perplexity / bits per byte",
        description="Three modes: a fine-tuned model on --task/--data (metric table + predictions); --zero-shot NAME "
        "(the paper's §5 heuristics with the LM alone); --perplexity FILE (sliding window).",
    )
    p.add_argument("--model", required=True, help="run dir, model dir or hub id")
    p.add_argument("--task", help="the task (default: the one the model was fine-tuned on)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--zero-shot", choices=_ZERO_SHOT, help=f"one of {', '.join(_ZERO_SHOT)}")
    mode.add_argument("--perplexity", metavar="FILE", help="a UTF-8 text file")
    p.add_argument("--data", help="task file or folder (default: the task's hub dataset)")
    p.add_argument("--split", default="validation", help="split to read from a task folder or hub (default validation)")
    p.add_argument("--calibration-data", help="zero-shot cola: labelled data to choose the threshold on")
    p.add_argument("--tokenizer", help="tokenizer dir or hub id (default: the model's)")
    p.add_argument("--batch-size", type=int, default=32, help="examples (or windows) per forward pass (default 32)")
    p.add_argument("--stride", type=int, help="perplexity: tokens between window starts (default: half the window)")
    p.add_argument("--max-length", type=int, help="perplexity: window length (default: the model's context)")
    p.add_argument("--max-examples", type=int, help="evaluate only the first N examples")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available, else cpu)")
    p.add_argument("--output", help="write the metrics and predictions to this JSON file")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    _add_task_columns(p)


def _cmd_evaluate(args) -> None:
    from gpt1.data.readers import read_text_file
    from gpt1.recipes.finetune import evaluate
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
    p.add_argument("--max-new-tokens", type=int, default=50, help="tokens to generate per prompt (default 50)")
    p.add_argument("--greedy", action="store_true", help="greedy decoding (default: sampling)")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature, >= 0 (default 1.0)")
    p.add_argument("--top-k", type=int, default=None, help="sample among the k most likely tokens (0 or unset = off)")
    p.add_argument("--top-p", type=float, default=None, help="nucleus sampling: smallest set reaching p, in (0, 1]")
    p.add_argument("--repetition-penalty", type=float, default=1.0, help="HF's repetition penalty, > 0 (1.0 = off)")
    p.add_argument("--no-repeat-ngram-size", type=int, default=0, help="never repeat an n-gram of this size (0 = off)")
    p.add_argument("--num-beams", type=int, default=1, help="beam search with this many beams (implies --greedy)")
    p.add_argument("--num-samples", type=int, default=1, help="continuations per prompt (default 1)")
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
    p.add_argument("--dtype", default=None, help="float32 or bfloat16 (default: as stored)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available, else cpu)")


def _cmd_generate(args) -> None:
    from gpt1.config import GPT1Config
    from gpt1.data.readers import read_text_file
    from gpt1.inference.generate import check_generation_settings, generate_text, stream_text
    from gpt1.model.gpt import GPT
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
    preset = args.model.startswith("preset:")
    if preset:
        check_model_arg(args.model)
        if args.tokenizer is None:
            raise UserError("--model preset:NAME has no tokenizer of its own; pass --tokenizer DIR.")
        model = GPT(GPT1Config.from_preset(args.model.split(":", 1)[1])).to(dtype=dtype, device=device)
    else:
        model = GPT.from_pretrained(args.model, dtype=dtype, device=device)
    model.eval()
    tokenizer = load_tokenizer_for(None if preset else args.model, args.tokenizer)
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


# ---- entry point -----------------------------------------------------------------------------------------
# ---- finetune-lm ------------------------------------------------------------------------------------
def _add_finetune_lm(sub) -> None:
    p = sub.add_parser(
        "finetune-lm",
        help="causal-LM fine-tuning on a text column (e.g. jokes as 'JOKE: <joke><|endoftext|>')",
        description="Fine-tune a causal LM on one text column. The end-of-text token is added as a real vocabulary "
        "entry; padding is kept out of the loss and attention; each batch pads only to its own longest "
        "example (or --packing fills whole blocks, attention kept inside each example).",
    )
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--model", help="weights: hub id (openai-community/openai-gpt), model dir or gpt1 run dir")
    which.add_argument(
        "--preset", help="random weights of a preset (gpt1, small, mini, tiny); needs --tokenizer or the hub"
    )
    p.add_argument(
        "--data", required=True, nargs="+", help="CSV/TSV/JSONL/text file(s) or folder, or a `datasets` name"
    )
    p.add_argument("--text-column", default=None, help="column holding the text (default 'text'), e.g. Joke")
    p.add_argument("--template", default="JOKE: {text}", help="format of each example (default 'JOKE: {text}')")
    p.add_argument("--eos", default="<|endoftext|>", help="end-of-text token appended to each example")
    p.add_argument("--out", required=True, help="the run dir")
    p.add_argument("--tokenizer", help="tokenizer dir or hub id (default: the model's)")
    p.add_argument("--epochs", type=float, default=None, help="passes over the training data (default 3)")
    p.add_argument("--max-steps", type=int, help="optimizer steps instead of --epochs")
    p.add_argument("--batch-size", type=int, default=16, help="examples (or packed blocks) per step (default 16)")
    p.add_argument(
        "--lr",
        type=float,
        default=None,
        help="peak learning rate (default 6.25e-5 with --model; with --preset the pre-training lr of its depth)",
    )
    p.add_argument(
        "--warmup-fraction",
        type=float,
        default=None,
        help="linear warmup share of training (default 0.002 with --model; with --preset the depth's warmup)",
    )
    p.add_argument(
        "--schedule",
        choices=["linear", "cosine", "constant"],
        default="linear",
        help="decay after warmup (default linear)",
    )
    p.add_argument("--weight-decay", type=float, default=0.01, help="decoupled weight decay on matrices (default 0.01)")
    p.add_argument("--val-fraction", type=float, default=0.05, help="share held out for validation (default 0.05)")
    p.add_argument("--max-val", type=int, default=2000, help="at most this many validation examples (default 2000)")
    p.add_argument("--packing", action="store_true", help="pack whole examples into full blocks of the context size")
    p.add_argument("--max-length", type=int, help="cut examples to this many tokens (default: the model's context)")
    p.add_argument("--sample-prompt", default="JOKE:", help="prompt sampled at each evaluation ('' = none)")
    p.add_argument("--num-samples", type=int, default=3, help="generations printed per evaluation (default 3)")
    p.add_argument(
        "--eval-every", type=int, help="steps between evaluations (default: a quarter of the run, at most an epoch)"
    )
    p.add_argument("--save-every", type=int, help="steps between checkpoints (default: as --eval-every)")
    p.add_argument("--log-every", type=int, default=10, help="steps between metrics rows (default 10)")
    p.add_argument(
        "--seed", type=int, default=1234, help="seed of the split, data order, new rows and dropout (default 1234)"
    )
    _add_run_options(p)


def _cmd_finetune_lm(args) -> None:
    from gpt1.recipes.finetune_lm import finetune_lm

    for name in ("max_steps", "batch_size", "num_proc", "eval_every", "save_every", "log_every"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} {getattr(args, name)} is invalid; use 1 or more.")
    if args.epochs is not None and not args.epochs > 0:
        raise UserError(f"--epochs {args.epochs} is invalid; use a number > 0.")
    if args.warmup_fraction is not None and not 0 <= args.warmup_fraction < 1:
        raise UserError(f"--warmup-fraction {args.warmup_fraction} is invalid; use a fraction in [0, 1).")
    if not args.weight_decay >= 0:
        raise UserError(f"--weight-decay {args.weight_decay} is invalid; use 0 or more.")
    if not 0 <= args.val_fraction < 1:
        raise UserError(f"--val-fraction {args.val_fraction} is invalid; use a fraction in [0, 1) (0 = no validation).")
    if args.max_length is not None and args.max_length < 2:
        raise UserError(f"--max-length {args.max_length} is invalid; use 2 up to the model's context.")
    check_run_args(preset=args.preset, out=args.out, device=args.device, lr=args.lr)
    result = finetune_lm(
        args.data if len(args.data) > 1 else args.data[0],
        args.out,
        model=args.model,
        preset=args.preset,
        tokenizer=args.tokenizer,
        text_column=args.text_column,
        template=args.template,
        eos=args.eos,
        epochs=args.epochs,
        max_steps=args.max_steps,
        batch_size=args.batch_size,
        lr=args.lr,
        warmup_fraction=args.warmup_fraction,
        schedule=args.schedule,
        weight_decay=args.weight_decay,
        val_fraction=args.val_fraction,
        max_val=args.max_val,
        packing=args.packing,
        max_length=args.max_length,
        sample_prompt=args.sample_prompt or None,
        num_samples=args.num_samples,
        eval_every=args.eval_every,
        save_every=args.save_every,
        log_every=args.log_every,
        seed=args.seed,
        precision=args.precision,
        device=args.device,
        compile=args.compile,
        num_proc=args.num_proc,
        resume=args.resume,
        progress=args.progress,
    )
    val = f", val_loss {result['val_loss']:.4f}" if result.get("val_loss") is not None else ""
    report_run(
        "finetune-lm",
        result,
        f"step {result['step']}{val}; run dir {result['run_dir']} (eos id {result['eos_token_id']})",
    )


# ---- demo -------------------------------------------------------------------------------------------
def _add_demo(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="offline: train a small GPT-1 on pyjokes' jokes and print new jokes (minutes, CPU)",
        description="Learn a small BPE on the jokes of the pyjokes package, train a GPT-1-architecture "
        "model on them (offline, a few minutes on a CPU), show the loss falling and print "
        "new jokes sampled from the best validation step. Running it again replaces the "
        "earlier demo run in --out (it says so); --resume auto continues it instead.",
    )
    p.add_argument("--out", default="runs/demo", help="the run dir (default runs/demo)")
    p.add_argument("--model", help="fine-tune these weights instead (e.g. openai-community/openai-gpt; online)")
    p.add_argument("--quick", action="store_true", help="a CI-sized run (seconds): tiny model, 30 steps")
    p.add_argument("--steps", type=int, help="optimizer steps (default 300, --quick 30)")
    p.add_argument("--num-jokes", type=int, default=8, help="jokes generated at the end (default 8)")
    p.add_argument("--lr", type=float, help="peak learning rate (default 1e-3 from scratch, 6.25e-5 with --model)")
    p.add_argument(
        "--seed", type=int, default=1234, help="seed of the split, weights, data order and sampling (default 1234)"
    )
    p.add_argument("--resume", help="'auto' (latest checkpoint in --out, if any) or a checkpoint path")


def _cmd_demo(args) -> None:
    from gpt1.recipes.demo import demo

    if args.steps is not None and args.steps < 1:
        raise UserError(f"--steps {args.steps} is invalid; use 1 or more.")
    check_run_args(out=args.out, lr=args.lr)
    result = demo(
        args.out,
        model=args.model,
        quick=args.quick,
        steps=args.steps,
        num_jokes=args.num_jokes,
        lr=args.lr,
        seed=args.seed,
        resume=args.resume,
    )
    if result["interrupted"]:  # as finetune-lm does: say so, say how to continue, exit 130
        again = " ".join(
            f"{flag} {value}"
            for flag, value in (
                ("--model", args.model),
                ("--steps", args.steps),
                ("--lr", args.lr),
                ("--seed", args.seed),
            )
            if value is not None and not (flag == "--seed" and value == 1234)
        )
        print(f"interrupted at step {result['step']}; the checkpoint is in {result['run_dir']}")
        print(
            f"resume with: gpt1 demo --out {result['run_dir']}{' --quick' if args.quick else ''}"
            f"{' ' + again if again else ''} --resume auto",
            file=sys.stderr,
        )
        raise KeyboardInterrupt


# ---- reproduce ---------------------------------------------------------------------------------------
def _float_list(text: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers")
    if not values:
        raise argparse.ArgumentTypeError(f"{text!r} holds no number")
    return values


def _add_reproduce(sub) -> None:
    p = sub.add_parser(
        "reproduce",
        argument_default=argparse.SUPPRESS,
        help="the paper's analysis at a budget: pre-train, then Table 5's ablations and Figure 2's curves",
        description="Pre-train on books (or take --model), fine-tune on every task given with and without "
        "pre-training and the auxiliary LM loss, transfer 0..L layers, track the zero-shot heuristics "
        "over pre-training, and write RUN/report.md, report.json and figures. Run the same command again "
        "to continue an interrupted run. --scale default takes about an hour on a 2-core CPU; quick "
        "takes seconds; gpt1 is the paper's model and recipe (a GPU job).",
    )
    p.add_argument("--out", required=True, help="the run dir")
    p.add_argument(
        "--scale",
        choices=["default", "quick", "gpt1"],
        help="a set of sizes and budgets (default: about an hour on a 2-core CPU)",
    )
    p.add_argument("--config", help="YAML or JSON file of settings (keys as the flags); flags override it")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--books", help="folder of text files to pre-train on (e.g. the shared Gutenberg books)")
    which.add_argument("--model", help="a pre-trained model instead of pre-training (dir or hub id)")
    p.add_argument("--tokenizer", help="with --books: this tokenizer instead of learning a BPE on the books")
    p.add_argument("--glue", help="folder with GLUE's task folders (SST-2, CoLA, MRPC, RTE, STS-B; train.tsv each)")
    p.add_argument("--story-cloze", help="the Story Cloze CSV (cloze_test_val__spring2016.csv)")
    p.add_argument(
        "--tasks",
        type=lambda t: [x for x in t.split(",") if x],
        help="tasks to run, comma-separated (default: sst2,cola,mrpc,rte,stsb,rocstories)",
    )
    p.add_argument("--preset", help="model preset to pre-train (default mini)")
    p.add_argument("--vocab-size", type=int, help="BPE entries learned on the books (default 8000)")
    p.add_argument("--pretrain-tokens", type=_int_like, help="pre-training budget in tokens (default 16M)")
    p.add_argument("--batch-tokens", type=_int_like, help="pre-training batch in tokens (default 4096)")
    p.add_argument("--pretrain-lr", type=float, help="pre-training peak lr (default: the preset's)")
    p.add_argument("--snapshots", type=int, help="pre-training snapshots for the zero-shot curves (default 6)")
    p.add_argument("--finetune-lrs", type=_float_list, help="fine-tuning lr sweep (default 6.25e-5,2.5e-4,1e-3)")
    p.add_argument("--epochs", type=float, help="fine-tuning epochs (default 3)")
    p.add_argument("--max-train", type=int, help="training examples per task (default 2000)")
    p.add_argument("--layer-task", help="task of the layers-transferred curve (default sst2)")
    p.add_argument("--max-steps", type=int, help="cap on every fine-tuning run's steps (toy runs)")
    p.add_argument("--seed", type=int, help="seed of splits, weights and data order (default 1234)")
    p.add_argument("--precision", choices=["auto", "bf16", "fp32"], help="auto: bf16 autocast where it is faster")
    p.add_argument("--device", help="cpu, cuda ... (default: cuda if available)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")


def _cmd_reproduce(args) -> None:
    from gpt1.recipes.reproduce import reproduce, reproduce_config

    flags = {k: v for k, v in vars(args).items() if k not in ("command", "config", "out", "progress")}
    settings = {**(_read_config_file(args.config) if getattr(args, "config", None) else {}), **flags}
    scale = settings.pop("scale", "default")
    if "tasks" in settings:
        settings["tasks"] = tuple(settings["tasks"])
    config = reproduce_config(scale, **settings)
    try:
        report = reproduce(config, args.out, progress=getattr(args, "progress", True))
    except KeyboardInterrupt:
        print(f"to continue, run the same command again (it resumes from {args.out}/state.json)", file=sys.stderr)
        raise
    t5 = report["table5"]
    gaps = ", ".join(f"{t} {100 * (v['full']['test'] - v['scratch']['test']):+.1f}" for t, v in t5.items())
    print(f"done: pre-trained minus from-scratch (test points): {gaps}; report {Path(args.out) / 'report.md'}")


# In the order `gpt1 --help` lists them: the first minute's commands, then the paper's two stages, then serving.
COMMANDS = [
    "demo",
    "generate",
    "info",
    "tokenize",
    "convert",
    "prepare",
    "pretrain",
    "finetune-lm",
    "finetune",
    "evaluate",
    "reproduce",
    "serve",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gpt1", description="GPT-1: load, generate, pre-train, fine-tune, evaluate and serve."
    )
    parser.add_argument("--version", action="version", version=f"gpt1 {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        globals()[f"_add_{name.replace('-', '_')}"](sub)
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


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 0
    try:
        globals()[f"_cmd_{args.command.replace('-', '_')}"](args)
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
