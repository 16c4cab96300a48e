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

DEFAULT_TOKENIZER = "openai-community/openai-gpt"


class UserError(Exception):
    """A mistake in what the user asked for; printed as one line, no traceback."""


# ---- shared helpers ---------------------------------------------------------------------------------
def load_tokenizer_for(model_or_path: str | None, tokenizer: str | None = None):
    """The tokenizer saved with a model (or the one named by --tokenizer)."""
    from .tokenizer import Tokenizer

    return Tokenizer.from_pretrained(tokenizer or model_or_path or DEFAULT_TOKENIZER)


def parse_dtype(name: str | None):
    import torch

    if name in (None, "auto"):
        return None
    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16}  # fmt: skip
    if name not in table:
        raise UserError(f"--dtype {name!r} is not supported; use float32, bfloat16 or float16.")
    return table[name]


# ---- info ---------------------------------------------------------------------------------------------
def _add_info(sub) -> None:
    p = sub.add_parser("info", help="show a model's config and parameter count")
    p.add_argument("model", help="model dir, OpenAI release dir, hub id, or preset:NAME")


def _cmd_info(args) -> None:
    from .config import GPT1Config
    from .model import GPT

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
    p = sub.add_parser("tokenize", help="show how GPT-1's tokenizer splits a text")
    p.add_argument("text", help="the text (use - to read standard input)")
    p.add_argument("--ids", action="store_true", help="print token ids instead of token strings")
    p.add_argument("--tokenizer", default=None, help=f"tokenizer dir or hub id (default {DEFAULT_TOKENIZER})")


def _cmd_tokenize(args) -> None:
    tok = load_tokenizer_for(None, args.tokenizer)
    text = sys.stdin.read() if args.text == "-" else args.text
    if args.ids:
        print(" ".join(map(str, tok.encode(text))))
    else:
        print(" ".join(tok.tokenize(text)))


# ---- convert ------------------------------------------------------------------------------------------
def _add_convert(sub) -> None:
    p = sub.add_parser("convert", help="convert OpenAI's original npy release into an HF model dir")
    p.add_argument("original_dir")
    p.add_argument("out_dir")


def _cmd_convert(args) -> None:
    from .checkpoint import convert_original, is_original_release

    if not is_original_release(Path(args.original_dir)):
        raise UserError(f"{args.original_dir}: not an OpenAI release dir (no params_shapes.json).")
    out = convert_original(args.original_dir, args.out_dir)
    print(f"wrote {out}")


# ---- entry point -----------------------------------------------------------------------------------------
COMMANDS = ["info", "tokenize", "convert"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gpt1", description="GPT-1: load, generate, pre-train, fine-tune, evaluate and serve."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        globals()[f"_add_{name.replace('-', '_')}"](sub)
    return parser


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
    except (UserError, ValueError, FileNotFoundError, NotADirectoryError, PermissionError) as e:
        if os.environ.get("GPT1_DEBUG"):
            raise
        print(f"gpt1 {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
