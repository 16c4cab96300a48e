"""Experiment trackers (`--logger`): TensorBoard, Weights & Biases, MLflow and trackio get the rows of
`metrics.jsonl`, the run's settings and its plots, each through one small adapter behind the same four calls.

Offline first, and all under `RUN/logs/` unless the user points a tracker elsewhere: TensorBoard event files in
`logs/tensorboard/<run id>/`, wandb in offline mode in `logs/wandb/` (online only when `WANDB_MODE` says so or the
user is logged in), MLflow in a local file store `logs/mlruns/` (unless `MLFLOW_TRACKING_URI` is set), trackio in
`logs/trackio/` (unless `TRACKIO_DIR` is set). `logs/trackers.json` keeps each tracker's run id and the last step of
every metric it was sent, so `--resume auto` continues the same tracker runs without sending a step twice. Each
tracker's package is imported only when asked for; a missing one is one line naming its extra.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import json
import logging
import math
import os
import shutil
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol

from gpt1.training.state import write_json

__all__ = ["TRACKERS", "Tracker", "Trackers", "TrackerMissing", "check_trackers", "open_trackers"]
logger = logging.getLogger(__name__)

TRACKERS = ("tensorboard", "wandb", "mlflow", "trackio")
_MODULES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow", "trackio": "trackio"}
PROJECT = "gpt1"  # wandb project, MLflow experiment and trackio project, unless the user's environment names one


class TrackerMissing(ImportError, ValueError):
    """A tracker whose package is not installed (a ValueError too, so the CLI shows it as one line)."""


class Tracker(Protocol):
    """One experiment tracker's run: what every adapter does."""

    name: str
    run_id: str
    where: str  # what the run is and how to view it, for the log

    def log_metrics(self, row: dict[str, float], step: int) -> None: ...

    def log_config(self, config: dict[str, Any]) -> None: ...

    def log_artifact(self, path: Path) -> None: ...

    def close(self, status: str = "finished") -> None: ...


def check_trackers(names: Iterable[str] | str | None) -> tuple[str, ...]:
    """`names` as a tuple, each a known tracker whose package is installed; else a one-line error naming it."""
    names = (names,) if isinstance(names, str) else tuple(names or ())
    for name in names:
        if name not in TRACKERS:
            raise ValueError(f"--logger {name!r} is not a tracker; use one of {', '.join(TRACKERS)}.")
        if not _installed(_MODULES[name]):
            raise _missing(name)
    return tuple(dict.fromkeys(names))  # once each, in the order given


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _missing(name: str) -> TrackerMissing:
    return TrackerMissing(f'--logger {name} needs the {_MODULES[name]} package: pip install "gpt1[{name}]"')


def _import(name: str, module: str | None = None) -> Any:
    """The tracker's package, imported now (lazily: a run without `--logger` never pays for it)."""
    try:
        return importlib.import_module(module or _MODULES[name])
    except ImportError:
        raise _missing(name) from None


# ---- the trackers of one run -----------------------------------------------------------------------------------------
class Trackers:
    """Sends each row, the config and the artifacts to every open tracker and keeps `logs/trackers.json`.

    A metric reaches a tracker only at a step past the last one it got: after a resume, the steps between the
    checkpoint and the interruption (already sent) are not sent again, nor an eval row's copies of the train row's
    values at the same step. A tracker that fails mid-run is dropped with a warning; training goes on."""

    def __init__(self, trackers: list[Tracker], state_path: Path | None = None, state: dict | None = None) -> None:
        self.trackers = trackers
        self.state_path = state_path
        self.state = state or {}

    def __bool__(self) -> bool:
        return bool(self.trackers)

    def log_metrics(self, row: dict[str, Any], step: int) -> None:
        values = {k: float(v) for k, v in row.items() if k != "step" and _number(v)}
        sends = []
        for tracker in self.trackers:
            seen = self.state[tracker.name].setdefault("steps", {})
            new = {k: v for k, v in values.items() if step > seen.get(k, 0)}
            if new:
                seen.update(dict.fromkeys(new, step))
                sends.append((tracker, new))
        if sends:
            self._save()  # first, so a kill between the two can lose a row but never send it twice
        for tracker, new in sends:
            self._call(tracker, "log_metrics", new, step)

    def log_config(self, config: dict[str, Any]) -> None:
        for tracker in list(self.trackers):
            self._call(tracker, "log_config", config)

    def log_artifact(self, path: Path) -> None:
        if Path(path).is_file():
            for tracker in list(self.trackers):
                self._call(tracker, "log_artifact", Path(path))

    def close(self, status: str = "finished") -> None:
        for tracker in self.trackers:
            try:
                tracker.close(status)
            except Exception as e:  # closing one must not keep the others open
                logger.warning(f"warning: --logger {tracker.name} could not close its run ({type(e).__name__}: {e})")
        self.trackers = []

    def _call(self, tracker: Tracker, method: str, *args: Any) -> None:
        try:
            getattr(tracker, method)(*args)
        except Exception as e:
            logger.warning(
                f"warning: --logger {tracker.name} failed ({type(e).__name__}: {e}); it gets nothing more this run."
            )
            self.trackers.remove(tracker)
            with contextlib.suppress(Exception):
                tracker.close("failed")

    def _save(self) -> None:
        if self.state_path is not None:
            write_json(self.state_path, self.state)


def open_trackers(names: Iterable[str], run_dir: str | Path, *, resume: bool) -> Trackers:
    """Start (or, with `resume`, continue) a run in each named tracker for the run dir `run_dir`."""
    names = check_trackers(names)
    if not names:
        return Trackers([])
    run_dir = Path(run_dir)
    logs = run_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    state_path = logs / "trackers.json"
    saved = _read_state(state_path) if resume else {}
    state: dict[str, dict] = {}
    opened: list[Tracker] = []
    try:
        for name in names:
            before = saved.get(name)
            tracker = ADAPTERS[name](run_dir, before.get("run_id") if before else None)
            opened.append(tracker)
            state[name] = {"run_id": tracker.run_id, "steps": dict(before.get("steps", {})) if before else {}}
            logger.info(f"{name}: {tracker.where}")
    except BaseException:
        for tracker in opened:
            with contextlib.suppress(Exception):
                tracker.close("failed")
        raise
    trackers = Trackers(opened, state_path, {**saved, **state})
    trackers._save()
    return trackers


def _read_state(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _new_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S")


def flat_params(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested settings as `{"resolved.train.lr": 2.5e-4, ...}`: numbers, bools and strings as they are, anything
    else (lists, None) as JSON text, for trackers whose hyperparameters are flat scalars."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flat_params(value, name + "."))
        elif isinstance(value, (bool, int, float, str)):
            out[name] = value
        else:
            out[name] = json.dumps(value, default=str)
    return out


# ---- adapters --------------------------------------------------------------------------------------------------------
class TensorBoardTracker:
    """Event files in `RUN/logs/tensorboard/<run id>/` (`torch.utils.tensorboard`); a resume appends a new event
    file to the same run's folder. TensorBoard has no artifacts: the curves are its own."""

    name = "tensorboard"

    def __init__(self, run_dir: Path, run_id: str | None) -> None:
        _import(self.name)
        from torch.utils.tensorboard import SummaryWriter

        self.resumed = run_id is not None
        runs = run_dir / "logs" / "tensorboard"
        self.run_id = run_id or _new_id()
        n = 1
        while not self.resumed and (runs / self.run_id).exists():  # two fresh starts within a second
            n += 1
            self.run_id = f"{_new_id()}-{n}"
        self.dir = runs / self.run_id
        self.where = f"event files in {self.dir} (view: tensorboard --logdir {runs})"
        self.writer = SummaryWriter(log_dir=str(self.dir), flush_secs=10)

    def log_metrics(self, row: dict[str, float], step: int) -> None:
        for key, value in row.items():
            self.writer.add_scalar(key, value, step)

    def log_config(self, config: dict[str, Any]) -> None:
        if self.resumed:  # written when the run started; a second copy would sit beside it at step 0
            return
        text = json.dumps(config, indent=2, default=str)
        self.writer.add_text("run_config", "    " + text.replace("\n", "\n    "), 0)  # indented: a code block
        from torch.utils.tensorboard.summary import hparams

        for summary in hparams({k: _hparam(v) for k, v in flat_params(config).items()}, {}):  # the HPARAMS tab
            self.writer.file_writer.add_summary(summary)

    def log_artifact(self, path: Path) -> None:
        pass

    def close(self, status: str = "finished") -> None:
        self.writer.close()


def _hparam(value: Any) -> Any:
    return value if isinstance(value, (bool, int, float, str)) else str(value)


class WandbTracker:
    """A Weights & Biases run in `RUN/logs/wandb/`: offline (upload later with `wandb sync`) unless `WANDB_MODE`
    is set or the user is logged in; resumed by id. Artifacts are saved as the run's files."""

    name = "wandb"

    def __init__(self, run_dir: Path, run_id: str | None) -> None:
        wandb = _import(self.name)
        env = os.environ
        mode = None if ("WANDB_MODE" in env or _wandb_logged_in()) else "offline"
        self.run = wandb.init(
            project=None if "WANDB_PROJECT" in env else PROJECT,
            dir=None if "WANDB_DIR" in env else str(run_dir / "logs"),
            id=run_id,  # None: wandb makes one
            name=run_dir.name,
            resume="allow",
            mode=mode,
            settings=wandb.Settings(silent=True),
        )
        self.run_id = self.run.id
        offline = self.run.settings.mode in ("offline", "dryrun") or getattr(self.run, "offline", False)
        folder = Path(self.run.dir).parent
        self.where = (
            f"offline run {self.run_id} in {folder} (upload: wandb sync {folder.parent}/offline-run-*-{self.run_id})"
            if offline
            else f"run {self.run_id} ({getattr(self.run, 'url', '') or 'online'})"
        )

    def log_metrics(self, row: dict[str, float], step: int) -> None:
        self.run.log(row, step=step)

    def log_config(self, config: dict[str, Any]) -> None:
        self.run.config.update(config, allow_val_change=True)

    def log_artifact(self, path: Path) -> None:
        # A copy in the run's files folder: wandb would otherwise symlink it (and say so on the terminal).
        copy = Path(self.run.dir) / path.name
        shutil.copyfile(path, copy)
        self.run.save(str(copy), base_path=self.run.dir, policy="now")

    def close(self, status: str = "finished") -> None:
        self.run.finish(exit_code={"finished": 0, "interrupted": 130}.get(status, 1))


def _wandb_logged_in() -> bool:
    """An API key in the environment or in the netrc file ($NETRC or ~/.netrc) for the wandb host (what
    `wandb login` writes)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    import netrc
    from urllib.parse import urlparse

    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


class MlflowTracker:
    """An MLflow run: in the local file store `RUN/logs/mlruns/` unless `MLFLOW_TRACKING_URI` names a server or
    store; experiment `MLFLOW_EXPERIMENT_NAME` or gpt1. Settings are flat params (and run_config.json as an
    artifact); resumed by run id."""

    name = "mlflow"

    def __init__(self, run_dir: Path, run_id: str | None) -> None:
        _import(self.name)
        from mlflow import MlflowClient

        uri = os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:
            # MLflow 3 keeps its file store behind this switch (it recommends a database, which mlflow-skinny
            # cannot open); a local file store needs no server and no extra package.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            uri = (run_dir / "logs" / "mlruns").absolute().as_uri()
        self.client = MlflowClient(tracking_uri=uri)
        run = None
        if run_id is not None:
            with contextlib.suppress(Exception):  # deleted or never written: a new run
                run = self.client.get_run(run_id)
        if run is None:
            experiment = os.environ.get("MLFLOW_EXPERIMENT_NAME", PROJECT)
            found = self.client.get_experiment_by_name(experiment)
            experiment_id = found.experiment_id if found else self.client.create_experiment(experiment)
            run = self.client.create_run(experiment_id, run_name=run_dir.name, tags={"gpt1.run_dir": str(run_dir)})
        else:
            self.client.update_run(run.info.run_id, status="RUNNING")
        self.run_id = run.info.run_id
        self.params = dict(run.data.params)
        self.where = f"run {self.run_id} in {uri}" + (
            f" (view: MLFLOW_ALLOW_FILE_STORE=true mlflow ui --backend-store-uri {uri})"
            if uri.startswith("file:")
            else ""
        )

    def log_metrics(self, row: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, step) for k, v in row.items()])

    def log_config(self, config: dict[str, Any]) -> None:
        from mlflow.entities import Param

        # A param is written once; a resumed run adds the new ones and keeps the first value of the others.
        new = {k: str(v)[:6000] for k, v in flat_params(config).items() if k not in self.params}
        items = [Param(k, v) for k, v in new.items()]
        for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(self.run_id, params=items[i : i + 100])
        self.params.update(new)
        self.client.log_dict(self.run_id, config, "run_config.json")

    def log_artifact(self, path: Path) -> None:
        self.client.log_artifact(self.run_id, str(path))

    def close(self, status: str = "finished") -> None:
        self.client.set_terminated(self.run_id, {"finished": "FINISHED", "interrupted": "KILLED"}.get(status, "FAILED"))


class TrackioTracker:
    """A trackio run in a local SQLite store: `RUN/logs/trackio/` unless `TRACKIO_DIR` is set (view it with
    `TRACKIO_DIR=RUN/logs/trackio trackio show`); resumed by name. trackio keeps metrics and config, no artifacts."""

    name = "trackio"

    def __init__(self, run_dir: Path, run_id: str | None) -> None:
        trackio = _import(self.name)
        store = Path(os.environ.get("TRACKIO_DIR") or run_dir / "logs" / "trackio").absolute()
        self._restore = _point_trackio_at(store)
        try:
            with _to_log():
                self.run = trackio.init(
                    project=PROJECT, name=run_id or f"{run_dir.name}-{_new_id()}", resume="allow", embed=False
                )
        except BaseException:
            self._restore()
            raise
        self.run_id = self.run.name
        self.where = f"run {self.run_id} in {store} (view: TRACKIO_DIR={store} trackio show --project {PROJECT})"

    def log_metrics(self, row: dict[str, float], step: int) -> None:
        self.run.log(row, step=step)

    def log_config(self, config: dict[str, Any]) -> None:
        # trackio stores the config with the first row it logs (this comes before any).
        self.run.config.update(json.loads(json.dumps(config, default=str)))

    def log_artifact(self, path: Path) -> None:
        pass

    def close(self, status: str = "finished") -> None:
        try:
            with _to_log():
                self.run.finish()
            from trackio import context_vars

            if context_vars.current_run.get() is self.run:  # else trackio's exit hook finishes it once more
                context_vars.current_run.set(None)
        finally:
            self._restore()


def _point_trackio_at(store: Path):
    """Make trackio's local store `store` until the returned undo is called.

    trackio reads its folder (TRACKIO_DIR) once, at import, into module constants; one process may train several
    runs, each with its own store, so the constants of its loaded modules are re-pointed for the run's duration."""
    saved: list[tuple[Any, str, Any]] = []
    for module_name, module in list(sys.modules.items()):
        if module is None or not (module_name == "trackio" or module_name.startswith("trackio.")):
            continue
        for attr, path in (("TRACKIO_DIR", store), ("MEDIA_DIR", store / "media")):
            old = getattr(module, attr, None)
            if isinstance(old, Path):
                saved.append((module, attr, old))
                setattr(module, attr, path)

    def restore() -> None:
        for module, attr, old in saved:
            setattr(module, attr, old)

    return restore


@contextlib.contextmanager
def _to_log() -> Iterator[None]:
    """trackio prints its news; they go to this module's logger instead (the library never prints)."""
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer):
            yield
    finally:
        for line in buffer.getvalue().splitlines():
            if line.strip():
                logger.debug(f"trackio: {line.strip()}")


ADAPTERS: dict[str, type] = {
    "tensorboard": TensorBoardTracker,
    "wandb": WandbTracker,
    "mlflow": MlflowTracker,
    "trackio": TrackioTracker,
}
