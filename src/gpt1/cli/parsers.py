"""Command-line options generated from settings dataclasses, and `--config FILE` merged under the flags.

Each field of a recipe's config (`gpt1.training.config.setting`) becomes one option: `--name-with-dashes` (or its
`flag`), its help with the default appended, its type (from the annotation, or the field's `type`), choices, nargs,
action (`append`: a repeatable flag), argument group and mutually exclusive group; a bool is a switch (`--no-...` when
it defaults to true). Parsers are built with `argument_default=SUPPRESS`, so only the flags given appear, and they
override the config file's values.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from collections.abc import Callable
from typing import Any

from gpt1.cli.checks import UserError, coerce_settings
from gpt1.training.config import RESOLVED, flatten, is_union, read_settings, show_number


def add_settings(parser: argparse.ArgumentParser, config: type) -> None:
    """An option for every flat field of `config` that has a command-line form.

    The class's own fields come first, then the ones it inherits (the run options shared by every recipe)."""
    hints = config.flat_hints()
    groups: dict[str, Any] = {}
    exclusive: dict[str, Any] = {}
    for f in ordered_fields(config):
        meta = f.metadata
        if meta.get("cli", True) is False:
            continue
        target = parser
        if "group" in meta:
            if meta["group"] not in groups:
                groups[meta["group"]] = parser.add_argument_group(meta["group"])
            target = groups[meta["group"]]
        if "exclusive" in meta:
            if meta["exclusive"] not in exclusive:
                exclusive[meta["exclusive"]] = target.add_mutually_exclusive_group()
            target = exclusive[meta["exclusive"]]
        target.add_argument(*option_strings(f), **_argument(f, hints[f.name]))


def add_config_option(parser: argparse.ArgumentParser, config: type) -> None:
    """`--config FILE`: settings from YAML or JSON, with the flags on top."""
    extra = [f.name for f in config.flat_fields() if f.metadata.get("cli", True) is False]
    also = f", and {', '.join(extra)}" if extra else ""
    parser.add_argument(
        "--config",
        metavar="FILE",
        help=f"YAML or JSON file of settings (keys as the flags' names{also}); flags override it. A run's "
        "RUN/run_config.json runs it again",
    )


def ordered_fields(config: type) -> list[dataclasses.Field]:
    """`config.flat_fields()`, the class's own (and its nested configs') first, then the inherited ones."""
    own = set(vars(config).get("__annotations__", {}))
    fields = config.flat_fields()
    top = {f.name for f in dataclasses.fields(config)}
    mine = [f for f in fields if f.name in own or f.name not in top]
    return mine + [f for f in fields if f not in mine]


def option_strings(f: dataclasses.Field) -> list[str]:
    """The field's long flag, then its aliases."""
    return [f.metadata.get("flag") or "--" + f.name.replace("_", "-"), *f.metadata.get("aliases", ())]


def settings_from_args(
    args: argparse.Namespace, parser: argparse.ArgumentParser, config: type, verb: str, extra: tuple[str, ...] = ()
) -> dict:
    """The flat settings of a recipe verb: its --config file's values, then the flags given on top (a flag of a
    mutually exclusive group replaces the file's member of that group); required settings checked after both.
    `extra`: the verb's own settings beside the config's fields (reproduce's scale)."""
    names = {f.name for f in config.flat_fields()} | set(extra)
    flags = {k: v for k, v in vars(args).items() if k in names}
    from_file = read_config(args.config, config, parser, verb, extra) if getattr(args, "config", None) else {}
    exclusive: dict[str, list[str]] = {}
    for f in config.flat_fields():
        if "exclusive" in f.metadata:
            exclusive.setdefault(f.metadata["exclusive"], []).append(f.name)
    for members in exclusive.values():
        if any(m in flags for m in members):
            for m in members:
                from_file.pop(m, None)
    settings = {**from_file, **flags}
    _check_required(settings, parser, config, exclusive)
    return settings


def read_config(
    path: str, config: type, parser: argparse.ArgumentParser, verb: str, extra: tuple[str, ...] = ()
) -> dict:
    """A config file's settings for `verb`, flat, typed and checked like the flags they stand for."""
    raw = read_settings(path)
    resolved = raw.pop(RESOLVED, None)
    recipe = resolved.get("recipe") if isinstance(resolved, dict) else None
    if recipe not in (None, verb):
        raise UserError(f"--config {path} holds the settings of a `gpt1 {recipe}` run; use it with gpt1 {recipe}.")
    values = flatten(config, raw)
    known = [f.name for f in config.flat_fields()] + list(extra)
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise UserError(f"unknown setting(s) {', '.join(unknown)} in {path}; known: {', '.join(known)}.")
    return coerce_settings(values, parser, path)


def _check_required(settings: dict, parser, config: type, exclusive: dict[str, list[str]]) -> None:
    fields = {f.name: f for f in config.flat_fields()}
    missing = [
        option_strings(f)[0]
        for f in fields.values()
        if _required(f) and "exclusive" not in f.metadata and settings.get(f.name) is None
    ]
    if missing:
        parser.error(f"the following arguments are required: {', '.join(missing)}")
    for members in exclusive.values():
        if any(fields[m].metadata.get("required") for m in members) and all(settings.get(m) is None for m in members):
            parser.error(f"one of the arguments {' '.join(option_strings(fields[m])[0] for m in members)} is required")


def _argument(f: dataclasses.Field, hint: Any) -> dict[str, Any]:
    meta = f.metadata
    default = f.default
    kwargs: dict[str, Any] = {"dest": f.name}
    if _base_type(hint) is bool:
        negated = default is True
        kwargs["action"] = "store_false" if negated else "store_true"
        kwargs["help"] = _escape(("no " if negated else "") + meta.get("help", ""))
        return kwargs
    kind = meta.get("type") or _base_type(hint)
    if kind not in (None, str):
        kwargs["type"] = kind if kind in (int, float) else _as_argument_type(kind)
    for key in ("choices", "nargs", "metavar", "action"):  # action="append": a repeatable flag
        if key in meta:
            kwargs[key] = meta[key]
    if _required(f) and "exclusive" not in meta:
        kwargs["help"] = _escape(meta.get("help", "") + " (required)")
    else:
        kwargs["help"] = _escape(_with_default(meta.get("help", ""), default, meta.get("show_default", True)))
    return kwargs


def _required(f: dataclasses.Field) -> bool:
    """Required on the command line (or in --config): marked so, or without a default."""
    no_default = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    return bool(f.metadata.get("required")) or no_default


def _with_default(help: str, default: Any, show: bool) -> str:
    """`help` with "(default X)" unless it speaks of its default itself or there is nothing to show."""
    if not show or "default" in help or default in (None, False, "", (), dataclasses.MISSING) or default == {}:
        return help
    return f"{help} (default {show_value(default)})"


def show_value(value: Any) -> str:
    """A default as the help shows it: 6.25e-5, 32768, 'JOKE: {text}' (quoted when it has spaces), a,b for lists."""
    if isinstance(value, (int, float)):
        return show_number(value)
    if isinstance(value, (list, tuple)):
        return ",".join(show_value(v) for v in value)
    text = str(value)
    return repr(text) if not text or " " in text else text


def _escape(text: str) -> str:
    return text.replace("%", "%%")  # argparse %-formats help strings


def _as_argument_type(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """`parse` with its ValueError shown by argparse as is ("'ten' is not a number")."""

    def argument_type(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    argument_type.__name__ = getattr(parse, "__name__", "value")
    return argument_type


def _base_type(hint: Any) -> Any:
    """int for `int | None`, str for `list[str] | None` ... (the type of one command-line value), else None."""
    options = [a for a in typing.get_args(hint) if a is not type(None)] if is_union(hint) else [hint]
    first = options[0]
    if typing.get_origin(first) in (list, tuple):
        first = typing.get_args(first)[0]
    return first if first in (bool, int, float, str) else None
