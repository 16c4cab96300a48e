"""Settings as dataclasses, each default written once: a field carries its default and a one-line help (`setting`),
and the command line, config files and run_config.json are all made from the fields.

`Config` gives a settings dataclass its JSON/YAML round-trip: `to_dict` (JSON-ready; nested configs as mappings),
`from_dict` (nested configs and tuples rebuilt, unknown keys named), `from_flat` (nested fields given by their own
names, as flags and keyword arguments give them), `read_settings` (a YAML or JSON file). `TrainConfig` is the
Trainer's settings; `RunOptions` the ones every training recipe shares.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from gpt1.runtime import PRECISIONS
from gpt1.training.optim import SCHEDULES
from gpt1.training.trackers import TRACKERS

C = TypeVar("C", bound="Config")
RESOLVED = "resolved"  # run_config.json's key for what a run worked out from its settings (not settings itself)


def setting(default: Any = MISSING, help: str = "", *, factory: Callable[[], Any] | None = None, **cli: Any) -> Any:
    """A dataclass field with its default and one-line help.

    `cli` says how the command line shows it (read by `gpt1.cli.parsers`): `flag` (the long option; default
    `--name-with-dashes`), `aliases`, `type` (text -> value), `choices`, `nargs`, `metavar`, `action` ("append": a
    flag repeated once per value), `required` (on the command line only), `group` (an argument-group title),
    `exclusive` (a name shared by mutually exclusive fields), `show_default=False`, `cli=False` (a setting for
    config files and Python only).
    """
    metadata = {"help": help, **cli}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def like(config: type, name: str, **changes: Any) -> Any:
    """A field that repeats `config`'s field `name` (default, help, command-line spelling) with `changes` on top:
    `default=`, `help=` or any `setting` option. A shared setting is so written in one place."""
    source = next(f for f in dataclasses.fields(config) if f.name == name)
    metadata = {**source.metadata, **{k: v for k, v in changes.items() if k != "default"}}
    if "default" in changes:
        return field(default=changes["default"], metadata=metadata)
    if source.default_factory is not MISSING:
        return field(default_factory=source.default_factory, metadata=metadata)
    return field(default=source.default, metadata=metadata)


class Config:
    """Mixin for settings dataclasses: JSON round-trip, flat construction and field help."""

    label: typing.ClassVar[str] = "the"  # "Unknown <label> setting(s) ..."

    def to_dict(self) -> dict[str, Any]:
        """Every field, JSON-ready: nested configs as mappings, tuples as lists, paths as strings."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls: type[C], values: dict[str, Any]) -> C:
        """Build from a mapping as `to_dict` writes it, naming any unknown key (a typo in a config file)."""
        hints = typing.get_type_hints(cls)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"Unknown {cls.label} setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}.")
        kwargs = {}
        for name, value in values.items():
            nested = _config_type(hints[name])
            if nested is not None and isinstance(value, dict):
                value = nested.from_dict(value)
            elif _is_tuple(hints[name]) and isinstance(value, list):
                value = tuple(value)
            kwargs[name] = value
        return cls(**kwargs)

    @classmethod
    def from_flat(cls: type[C], values: dict[str, Any]) -> C:
        """Build from settings where a nested config's fields may be given by their own names (as flags are)."""
        return cls.from_dict(unflatten(cls, values))

    @classmethod
    def flat_fields(cls) -> list[dataclasses.Field]:
        """The fields as the command line sees them: a nested config's fields in place of it."""
        hints = typing.get_type_hints(cls)
        out = []
        for f in dataclasses.fields(cls):
            nested = _config_type(hints[f.name])
            out.extend(nested.flat_fields() if nested is not None else [f])
        return out

    @classmethod
    def flat_hints(cls) -> dict[str, Any]:
        """{field name: type annotation} of `flat_fields`."""
        hints = typing.get_type_hints(cls)
        out = {}
        for f in dataclasses.fields(cls):
            nested = _config_type(hints[f.name])
            out.update(nested.flat_hints() if nested is not None else {f.name: hints[f.name]})
        return out

    @classmethod
    def help(cls, name: str) -> str:
        """The one-line help of field `name` (nested configs' fields included)."""
        return next(f.metadata.get("help", "") for f in cls.flat_fields() if f.name == name)


def unflatten(cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """`values` with the fields of each nested config gathered under its name (explicit nested values kept)."""
    hints = typing.get_type_hints(cls)
    out = dict(values)
    for f in dataclasses.fields(cls):
        nested = _config_type(hints[f.name])
        if nested is None:
            continue
        inner = {g.name for g in dataclasses.fields(nested)}
        given = {k: out.pop(k) for k in list(out) if k in inner}
        current = out.get(f.name)
        if isinstance(current, Config):
            current = current.to_dict()
        if given or current is not None:
            out[f.name] = {**(current or {}), **unflatten(nested, given)}
    return out


def flatten(cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """The inverse of `unflatten`: a nested config's mapping replaced by its fields."""
    hints = typing.get_type_hints(cls)
    out = {}
    for key, value in values.items():
        nested = _config_type(hints[key]) if key in hints else None
        if nested is not None and isinstance(value, dict):
            out.update(flatten(nested, value))
        else:
            out[key] = value
    return out


def read_settings(path: str | Path) -> dict[str, Any]:
    """The mapping in a YAML or JSON file (`.json`: JSON, else YAML), keys with dashes read as underscores."""
    import yaml

    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"{path}: no such config file.")
    kind = "JSON" if file.suffix == ".json" else "YAML"
    try:
        data = json.loads(file.read_text()) if kind == "JSON" else yaml.safe_load(file.read_text())
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        raise ValueError(" ".join(f"{path}: not valid {kind} ({e}).".split())) from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of settings, got {type(data).__name__}.")
    return {k.replace("-", "_"): v for k, v in data.items()}


def _plain(value: Any) -> Any:
    if isinstance(value, Config):
        return value.to_dict()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, Path):
        return str(value)
    return value


def is_union(hint: Any) -> bool:
    """`X | Y` (or `Optional[X]`)."""
    return typing.get_origin(hint) in (typing.Union, types.UnionType)


def _config_type(hint: Any) -> type | None:
    """The Config class a field holds (also inside `X | None`), else None."""
    for t in (hint, *(typing.get_args(hint) if is_union(hint) else ())):
        if isinstance(t, type) and issubclass(t, Config) and dataclasses.is_dataclass(t):
            return t
    return None


def _is_tuple(hint: Any) -> bool:
    options = typing.get_args(hint) if is_union(hint) else (hint,)
    return any(t is tuple or typing.get_origin(t) is tuple for t in options)


# ---- values written as text (flags, config files, help) -----------------------------------------------------
def show_number(x: float) -> str:
    """A number as help texts write it: 6.25e-5, 1e-3, 0.002, 32768."""
    if isinstance(x, float) and x and abs(x) <= 1e-3:
        mantissa, _, exponent = f"{x:e}".partition("e")
        return f"{float(mantissa):g}e{int(exponent)}"
    return f"{x:g}" if isinstance(x, float) else str(x)


def int_like(text: str) -> int:
    """Integers also written as 1e6 or 2_000_000 (token budgets are large)."""
    try:
        value = float(str(text).replace("_", ""))
    except ValueError:
        raise ValueError(f"{text!r} is not a number") from None
    if value != int(value):
        raise ValueError(f"{text!r} is not a whole number")
    return int(value)


def float_list(text: str) -> tuple[float, ...]:
    """Comma-separated numbers: "6.25e-5,2.5e-4"."""
    try:
        values = tuple(float(x) for x in str(text).split(",") if x.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not a comma-separated list of numbers") from None
    if not values:
        raise ValueError(f"{text!r} holds no number")
    return values


def name_list(text: str) -> tuple[str, ...]:
    """Comma-separated names: "sst2,cola" (blanks dropped)."""
    return tuple(x.strip() for x in str(text).split(",") if x.strip())


# ---- the Trainer's settings ---------------------------------------------------------------------------------------
@dataclass
class TrainConfig(Config):
    """Optimisation and bookkeeping settings of one run; JSON-serialisable (saved in run_config.json)."""

    label: typing.ClassVar[str] = "training"

    lr: float = setting(2.5e-4, "peak learning rate")
    warmup_steps: int | None = setting(2000, "linear warmup updates")
    warmup_fraction: float | None = setting(
        None, "warmup as a share of all updates, instead of warmup_steps (e.g. 0.002, the paper's fine-tuning)"
    )
    schedule: str = setting("cosine", "decay after warmup: cosine or linear to 0, or constant", choices=SCHEDULES)
    weight_decay: float = setting(0.01, "decoupled weight decay on matrices and embeddings")
    betas: tuple[float, float] = setting((0.9, 0.999), "AdamW's betas", type=float_list)
    eps: float = setting(1e-8, "AdamW's epsilon")
    grad_clip: float = setting(1.0, "global gradient-norm clip, 0 = off")
    max_steps: int | None = setting(None, "optimizer steps to train", type=int_like)
    epochs: float | None = setting(None, "passes over the training data")
    grad_accum: int = setting(1, "micro-batches per optimizer step (per process)")
    eval_every: int = setting(500, "steps between evaluations")
    save_every: int = setting(500, "steps between checkpoints")
    keep_last: int = setting(2, "checkpoints kept")
    log_every: int = setting(10, "steps between metrics rows")
    seed: int = setting(1234, "seed of weights, data order and dropout")
    precision: str = setting(
        "auto",
        "auto: bf16 autocast where the hardware has bf16 (CUDA, or a CPU with AVX-512 BF16/AMX), else fp32",
        choices=PRECISIONS,
    )
    compile: bool = setting(False, "torch.compile the model")
    keep_freed_memory: bool = setting(
        False, "CPU: switch this process's glibc malloc to reuse freed memory (faster steps; kernels/cpu/allocator.py)"
    )
    best_metric: str = setting("val_loss", "the metric that picks the weights kept in best/")
    best_mode: str = setting(
        "min", "whether a lower (min) or higher (max) best_metric is better", choices=("min", "max")
    )
    device: str = setting("auto", "cpu, cuda, cuda:1 ... (default: this process's GPU when there is one, else cpu)")
    progress: bool = setting(True, "progress bars", flag="--no-progress")
    logger: tuple[str, ...] = setting(
        (),
        "an experiment tracker that also gets the metrics, settings and plots (offline, under RUN/logs): "
        f"{', '.join(TRACKERS)}; repeat the flag for several",
        choices=TRACKERS,
        action="append",
        metavar="TRACKER",
    )

    @classmethod
    def from_recipe(cls, settings: Any, **resolved: Any) -> TrainConfig:
        """A recipe's TrainConfig: its settings of the same names (lr, schedule, seed, device ...), then the values
        the recipe `resolved` (a default that depends on the model or the data, a step count)."""
        shared = {f.name: getattr(settings, f.name) for f in dataclasses.fields(cls) if hasattr(settings, f.name)}
        return cls(**{**shared, **resolved})

    def __post_init__(self) -> None:
        self.betas = tuple(self.betas)  # JSON gives a list
        self.logger = (self.logger,) if isinstance(self.logger, str) else tuple(self.logger or ())
        problems = []
        unknown = [name for name in self.logger if name not in TRACKERS]
        if unknown:
            problems.append(f"logger={unknown[0]!r} is not a tracker; use {', '.join(TRACKERS)}")
        if not self.lr > 0:
            problems.append(f"lr={self.lr!r} must be > 0")
        if self.schedule not in SCHEDULES:
            problems.append(f"schedule={self.schedule!r} must be one of {', '.join(SCHEDULES)}")
        if self.precision not in PRECISIONS:
            problems.append(
                f"precision={self.precision!r} must be one of {', '.join(PRECISIONS)} (fp16 is not offered)"
            )
        if self.warmup_steps is not None and self.warmup_steps < 0:
            problems.append(f"warmup_steps={self.warmup_steps!r} must be >= 0")
        if self.warmup_fraction is not None and not 0 <= self.warmup_fraction < 1:
            problems.append(f"warmup_fraction={self.warmup_fraction!r} must be in [0, 1)")
        if self.max_steps is not None and self.max_steps < 1:
            problems.append(f"max_steps={self.max_steps!r} must be >= 1")
        if self.epochs is not None and not self.epochs > 0:
            problems.append(f"epochs={self.epochs!r} must be > 0")
        if self.grad_accum < 1:
            problems.append(f"grad_accum={self.grad_accum!r} must be >= 1")
        for name in ("eval_every", "save_every", "log_every", "keep_last"):
            if getattr(self, name) < 1:
                problems.append(f"{name}={getattr(self, name)!r} must be >= 1")
        if self.best_mode not in ("min", "max"):
            problems.append(f"best_mode={self.best_mode!r} must be 'min' or 'max'")
        if self.weight_decay < 0 or self.grad_clip < 0:
            problems.append("weight_decay and grad_clip must be >= 0")
        if problems:
            raise ValueError(f"Invalid training settings: {'; '.join(problems)}.")


@dataclass(kw_only=True)
class RunOptions(Config):
    """Where and how a training recipe runs, and whether it resumes: the same for every training verb."""

    precision: str = like(TrainConfig, "precision")
    device: str = like(TrainConfig, "device")
    compile: bool = like(TrainConfig, "compile")
    # A recipe owns its process, so it may switch the process's allocator; the Trainer alone, a library, does not.
    keep_freed_memory: bool = like(
        TrainConfig,
        "keep_freed_memory",
        default=True,
        flag="--no-keep-freed-memory",
        help="malloc switch: on a CPU a recipe makes glibc keep freed memory for the next step, which is faster "
        "(kernels/cpu/allocator.py)",
    )
    num_proc: int = setting(1, "tokenizer worker processes")
    resume: str | None = setting(None, "'auto' (latest checkpoint in --out, if any) or a checkpoint path")
    progress: bool = like(TrainConfig, "progress")
    logger: tuple[str, ...] = like(TrainConfig, "logger")


def check_positive(config: Any, *names: str, low: int = 1) -> None:
    """Each of `names` that is set must be at least `low` (as `name=value is invalid; use N or more.`)."""
    for name in names:
        value = getattr(config, name)
        if value is not None and value < low:
            raise ValueError(f"{name}={value!r} is invalid; use {low} or more.")


def default_of(function: Callable, name: str) -> Any:
    """The default of `function`'s parameter `name`: a setting that mirrors a library function's default is written
    by pointing at it."""
    import inspect

    return inspect.signature(function).parameters[name].default
