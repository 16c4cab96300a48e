"""Checks and wording for the `gpt1` CLI: every user mistake becomes one line naming the flag, the value and what
is accepted, found before any download or training starts, with nothing written.

- `check_out_dir` / `check_out_file`: an output path that is a file (or a directory), under a file, read-only or
  not writable is refused up front (a probe file is created and removed at once).
- `flagify`: library messages name Python arguments (`max_new_tokens=0`); the CLI shows them as its flags
  (`--max-new-tokens 0`).
- `hub_message`: a hub id that could not be fetched, worded as the flag to pass instead.
- `coerce_settings`: values from a `--config` file get the flags' own types and choices.
"""

from __future__ import annotations

import argparse
import re
import tempfile
from pathlib import Path
from typing import Any

VOCAB_FILES = "encoder_bpe_40000.json + vocab_40000.bpe, or vocab.json + merges.txt"


class UserError(Exception):
    """A mistake in what the user asked for; printed as one line, no traceback."""


# ---- output paths --------------------------------------------------------------------------------------------
def check_out_dir(path: str, flag: str = "--out") -> None:
    """`path` can be (or become) a writable directory; else a UserError naming `flag`."""
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise UserError(f"{flag} {path}: is an existing file; name a directory (it is created if missing).")
    _check_writable(p if p.is_dir() else _nearest_existing(p), flag, path)


def check_out_file(path: str, flag: str) -> None:
    """`path` can be written as a file; else a UserError naming `flag` (checked before the work that fills it)."""
    p = Path(path).expanduser()
    if p.is_dir():
        raise UserError(f"{flag} {path}: is a directory; name a file.")
    _check_writable(_nearest_existing(p.parent) if not p.parent.is_dir() else p.parent, flag, path)


def _nearest_existing(p: Path) -> Path:
    q = p.absolute()
    while not q.exists() and q != q.parent:
        q = q.parent
    return q


def _check_writable(directory: Path, flag: str, path: str) -> None:
    if not directory.is_dir():
        raise UserError(f"{flag} {path}: {directory} is a file, so nothing can be created under it.")
    try:
        with tempfile.TemporaryFile(dir=directory):  # the real test: permissions, read-only mounts, quotas
            pass
    except OSError as e:
        raise UserError(f"{flag} {path}: cannot write in {directory} ({e.strerror or e}).") from None


# ---- wording -------------------------------------------------------------------------------------------------
# A name that is not part of a path or a longer word ("runs/lr=1/" and "max_steps.csv" stay as they are).
_NOT_AFTER, _NOT_BEFORE = r"(?<![\w/.-])", r"(?!\w|/|-|\.\w)"
_ASSIGNMENT = re.compile(_NOT_AFTER + r"([a-z][a-z0-9_]*)=('[^']*'|\"[^\"]*\"|[^\s,;()]+)")


def parser_flags(parser: argparse.ArgumentParser, aliases: dict[str, str] | None = None) -> dict[str, str]:
    """{python name: long flag} for a (sub)parser's options, plus `aliases` (library names the CLI spells otherwise)."""
    flags = {}
    for action in parser._actions:
        long = next((o for o in action.option_strings if o.startswith("--")), None)
        if long and action.dest != "help":
            flags[action.dest] = long
    return {**flags, **(aliases or {})}


def flagify(message: str, flags: dict[str, str]) -> str:
    """`name=value` in `message` as `--flag value` (`name=True` as `--flag`) for every name in `flags`."""

    def swap(m: re.Match) -> str:
        name, value = m.group(1), m.group(2)
        if name not in flags:
            return m.group(0)
        end = ""
        if value.endswith(".") and (_is_number(value[:-1]) or value[:-1] in ("True", "False")):
            value, end = value[:-1], "."  # the sentence's full stop, not part of the value
        value = value.strip("'\"")
        return flags[name] + end if value == "True" else f"{flags[name]} {value}{end}"

    message = _ASSIGNMENT.sub(swap, message)
    # Bare snake_case names ("lower max_new_tokens") are Python's too; plain words ("seed") are left alone.
    for name in sorted((n for n in flags if "_" in n), key=len, reverse=True):
        message = re.sub(_NOT_AFTER + name + _NOT_BEFORE, flags[name], message)
    return message


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def hub_message(args: argparse.Namespace, e) -> str:
    """A `HubUnavailable` as the flag to pass instead (the id came from --tokenizer, --model or a default)."""
    tokenizer, model = getattr(args, "tokenizer", None), getattr(args, "model", None)
    if args.command != "info" and e.repo_id == tokenizer:
        return (
            f"--tokenizer {tokenizer}: no such directory, and no hub repo of that name to use: {e.detail}; "
            f"pass a directory with GPT-1's vocabulary files ({VOCAB_FILES})."
        )
    if args.command != "info" and e.repo_id == model:
        instead = (
            "plain `gpt1 demo` (without --model) trains offline"
            if args.command == "demo"
            else ("pass a local model dir or run dir instead")
        )
        return f"--model {model}: no such directory, and no hub repo of that name to use: {e.detail}; {instead}."
    if tokenizer is None and args.command != "info":  # the default tokenizer stood in for one nobody named
        return (
            f"no --tokenizer given, and the default {e.repo_id} cannot be loaded: {e.detail}; pass --tokenizer "
            f"DIR with GPT-1's vocabulary files ({VOCAB_FILES})."
        )
    return str(e)


# ---- config files ---------------------------------------------------------------------------------------------
def coerce_settings(values: dict[str, Any], parser: argparse.ArgumentParser, source: str) -> dict[str, Any]:
    """`values` read from a config file, converted with the type (and checked against the choices) of the flag of
    the same name, so `max_steps: "10"` works and `max_steps: ten` is one clear error, not a comparison crash."""
    actions = {a.dest: a for a in parser._actions if a.option_strings}
    out = {}
    for key, value in values.items():
        action = actions.get(key)
        if action is None or value is None or isinstance(value, (list, dict)):
            out[key] = value  # settings without a flag (model_overrides) and lists (--data) are taken as they are
            continue
        flag = next(o for o in action.option_strings if o.startswith("--"))
        if action.nargs == 0:  # a switch such as --compile
            if not isinstance(value, bool):
                raise UserError(f"{flag} {value!r} (from {source}) is invalid: the switch takes true or false.")
        elif action.type is not None:
            if isinstance(value, bool):
                raise UserError(f"{flag} {value!r} (from {source}) is invalid: give a number.")
            try:
                value = action.type(str(value))
            except (argparse.ArgumentTypeError, TypeError, ValueError) as e:
                raise UserError(f"{flag} {value!r} (from {source}) is invalid: {e}.") from None
        if action.choices is not None and value not in action.choices:
            raise UserError(
                f"{flag} {value!r} (from {source}) is invalid: use one of {', '.join(map(str, action.choices))}."
            )
        out[key] = value
    return out


# ---- values every training verb can check before loading anything --------------------------------------------------
def check_preset(name: str, flag: str = "--preset") -> None:
    from gpt1.config import PRESETS

    if name not in PRESETS:
        raise UserError(f"{flag} {name!r} is not a preset; use one of {', '.join(PRESETS)}.")


def check_model_arg(model: str | None, flag: str = "--model") -> None:
    """`preset:NAME` must name a preset (checked here, before any tokenizer is fetched for it)."""
    from gpt1.config import preset_name

    if preset_name(model) is not None:
        check_preset(preset_name(model), f"{flag} preset:")


def check_run_args(
    *,
    preset: str | None = None,
    model: str | None = None,
    out: str | None = None,
    device: str | None = None,
    lr: float | None = None,
) -> None:
    """The preset, the run dir, the device and the lr of a training verb, before any download or tokenization."""
    import math

    from gpt1.runtime import resolve_device

    if preset is not None:
        check_preset(preset)
    check_model_arg(model)
    if out is not None:
        check_out_dir(out)
    if device not in (None, "auto"):
        try:
            resolve_device(device)
        except ValueError as e:
            raise UserError(str(e)) from None
    if lr is not None and not (math.isfinite(lr) and lr > 0):
        raise UserError(
            f"--lr {lr} is invalid; use a learning rate > 0 (e.g. 6.25e-5 to fine-tune, 2.5e-4 to pre-train)."
        )
