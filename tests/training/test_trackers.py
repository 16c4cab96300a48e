"""Experiment trackers (`--logger`), offline: each one's own store read back (TensorBoard's EventAccumulator, the
MLflow file store through MlflowClient, wandb's offline .wandb records, trackio's SQLite store), a crash and
`--resume auto` that leaves every step in every tracker exactly once, rank 0 alone logging, and the CLI's checks."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from gpt1 import GPT, GPT1Config
from gpt1.data.corpus import BlockSampler
from gpt1.evaluation.perplexity import evaluate_lm
from gpt1.training import trackers as trackers_mod
from gpt1.training.config import TrainConfig
from gpt1.training.trainer import Trainer, lm_loss_fn

ALL = ("tensorboard", "wandb", "mlflow", "trackio")
V, T = 64, 16


@pytest.fixture(autouse=True)
def offline_trackers(monkeypatch, tmp_path):
    """No user settings leak in: every tracker writes under the run dir, wandb offline."""
    for var in (
        "WANDB_MODE",
        "WANDB_API_KEY",
        "WANDB_DIR",
        "WANDB_PROJECT",
        "MLFLOW_TRACKING_URI",
        "MLFLOW_EXPERIMENT_NAME",
        "TRACKIO_DIR",
        "TRACKIO_SPACE_ID",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.netrc login, no ~/.config/wandb
    monkeypatch.setenv("WANDB_SILENT", "true")


def make_trainer(run: Path, loggers=ALL, loss_fn=None, **kw) -> Trainer:
    """A 2-layer model on random tokens: 8 steps, a row each step, eval every 2, checkpoints every 4."""
    torch.manual_seed(1)
    model = GPT(GPT1Config(vocab_size=V, n_positions=T, n_embd=32, n_layer=2, n_head=2))
    data = np.random.default_rng(0).integers(0, V, 4000).astype(np.uint16)
    val = [{"input_ids": torch.randint(0, V, (2, T), generator=torch.Generator().manual_seed(7))}]
    settings = dict(max_steps=8, warmup_steps=2, lr=1e-3, log_every=1, eval_every=2, save_every=4)
    settings.update(progress=False, precision="fp32", device="cpu", logger=tuple(loggers), **kw)
    return Trainer(
        model,
        TrainConfig(**settings),
        BlockSampler(data, T, 2, seed=3, rank=0, world_size=1),
        run,
        loss_fn=loss_fn,
        evaluate_fn=lambda m: evaluate_lm(m, val),
        on_eval=write_sample,  # as finetune-lm's samples
        run_config={"recipe_setting": 7},
    )


def write_sample(trainer: Trainer, metrics: dict) -> None:
    with (trainer.out_dir / "samples.jsonl").open("a") as f:
        f.write(json.dumps({"step": trainer.step, "text": "a joke"}) + "\n")


def jsonl_rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


# ---- each tracker's store, read back with its own tools ----------------------------------------------------------
def tensorboard_steps(run: Path, run_id: str) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "logs" / "tensorboard" / run_id))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def mlflow_client(run: Path):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=(run / "logs" / "mlruns").absolute().as_uri())


def mlflow_steps(run: Path, run_id: str, keys) -> dict[str, list[tuple[int, float]]]:
    client = mlflow_client(run)
    return {k: sorted((m.step, m.value) for m in client.get_metric_history(run_id, k)) for k in keys}


def wandb_records(path: Path) -> list:
    """The protobuf records of a .wandb file (LevelDB's log format: 32 KiB blocks of checksummed chunks)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    records, chunk, pos, block = [], b"", 7, 32768  # 7: the ":W&B" header, magic and version
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a chunk header is padding
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if length == 0 and kind == 0:
            break
        chunk += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST
            record = pb.Record()
            record.ParseFromString(chunk)
            records.append(record)
            chunk = b""
    return records


def wandb_steps(run: Path, run_id: str) -> tuple[dict[str, list[tuple[int, float]]], list]:
    """{key: [(step, value)]} over every offline run file of `run_id` (one per attempt), and their records."""
    files = sorted((run / "logs" / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb"))
    out: dict[str, list[tuple[int, float]]] = {}
    records = [r for f in files for r in wandb_records(f)]
    for r in records:
        if r.WhichOneof("record_type") != "history":
            continue
        items = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item}
        for k, v in items.items():
            if not k.startswith("_"):
                out.setdefault(k, []).append((items["_step"], v))
    return out, files


def trackio_steps(run: Path, name: str) -> tuple[dict[str, list[tuple[int, float]]], dict]:
    import trackio  # noqa: F401  (loads the modules whose store the helper points at the run dir)
    from trackio.sqlite_storage import SQLiteStorage

    restore = trackers_mod._point_trackio_at((run / "logs" / "trackio").absolute())
    try:
        logs = SQLiteStorage.get_logs("gpt1", name)
        config = SQLiteStorage.get_run_config("gpt1", name)
    finally:
        restore()
    out: dict[str, list[tuple[int, float]]] = {}
    for row in logs:
        for k, v in row.items():
            if k not in ("step", "timestamp"):
                out.setdefault(k, []).append((row["step"], v))
    return out, config


def expected(run: Path) -> dict[str, list[tuple[int, float]]]:
    """metrics.jsonl as {key: [(step, value)]}, each (key, step) once: what every tracker must hold."""
    out: dict[str, dict[int, float]] = {}
    for row in jsonl_rows(run):
        for k, v in row.items():
            if k != "step" and isinstance(v, (int, float)):
                out.setdefault(k, {}).setdefault(row["step"], float(v))
    return {k: sorted(v.items()) for k, v in out.items()}


def assert_same(got: dict, want: dict, rel: float, who: str) -> None:
    assert sorted(got) == sorted(want), (who, sorted(got), sorted(want))
    for key in want:
        steps = [s for s, _ in got[key]]
        assert sorted(steps) == [s for s, _ in want[key]], (who, key, steps)  # each step exactly once
        if key == "tokens_per_s":  # a timing: steps 5-6 were measured by the attempt before the crash
            continue
        for (_, a), (_, b) in zip(sorted(got[key]), want[key]):
            assert a == pytest.approx(b, rel=rel), (who, key)  # the resume is exact, so the values match too


def check_all(run: Path, state: dict) -> None:
    want = expected(run)
    assert set(want) == {"loss", "lr", "tokens_per_s", "tokens", "val_loss", "val_ppl"}
    assert [s for s, _ in want["loss"]] == list(range(1, 9)) and [s for s, _ in want["val_loss"]] == [2, 4, 6, 8]
    assert_same(tensorboard_steps(run, state["tensorboard"]["run_id"]), want, 1e-6, "tensorboard")  # float32
    assert_same(mlflow_steps(run, state["mlflow"]["run_id"], want), want, 1e-12, "mlflow")
    got, _ = wandb_steps(run, state["wandb"]["run_id"])
    assert_same(got, want, 1e-12, "wandb")
    got, _ = trackio_steps(run, state["trackio"]["run_id"])
    assert_same(got, want, 1e-12, "trackio")


# ---- the tests -----------------------------------------------------------------------------------------------------
def test_every_tracker_gets_each_step_once_across_a_crash_and_resume(tmp_path):
    """Crash at step 7 (last checkpoint: step 4), resume to 8: steps 5-6 were sent before the crash and are not
    sent again; each tracker holds metrics.jsonl's rows exactly, in the same tracker run, plus config and plots."""
    run = tmp_path / "run"

    def crashing(model, batch):
        crashing.calls += 1
        if crashing.calls == 7:
            raise RuntimeError("power cut")
        return lm_loss_fn(model, batch)

    crashing.calls = 0
    with pytest.raises(RuntimeError, match="power cut"):
        make_trainer(run, loss_fn=crashing).fit()
    first = json.loads((run / "logs" / "trackers.json").read_text())
    assert first["mlflow"]["steps"]["loss"] == 6
    result = make_trainer(run).fit(resume="auto")
    assert result["step"] == 8 and not result["interrupted"]
    state = json.loads((run / "logs" / "trackers.json").read_text())
    assert {k: v["run_id"] for k, v in state.items()} == {k: v["run_id"] for k, v in first.items()}  # same runs
    check_all(run, state)

    # the settings as hyperparameters, the plots and samples as artifacts where the tracker keeps files
    settings = json.loads((run / "run_config.json").read_text())
    client = mlflow_client(run)
    mlrun = client.get_run(state["mlflow"]["run_id"])
    assert mlrun.info.status == "FINISHED"
    assert mlrun.data.params["recipe_setting"] == "7"
    assert mlrun.data.params["resolved.train.lr"] == str(settings["resolved"]["train"]["lr"])
    artifacts = {a.path for a in client.list_artifacts(mlrun.info.run_id)}
    assert {"loss.png", "samples.jsonl", "run_config.json"} <= artifacts
    _, config = trackio_steps(run, state["trackio"]["run_id"])
    assert config["recipe_setting"] == 7 and config["resolved"]["total_steps"] == 8
    _, files = wandb_steps(run, state["wandb"]["run_id"])
    assert len(files) == 2  # one offline file per attempt, one run id
    last = files[-1].parent / "files"
    assert (last / "loss.png").is_file()
    assert (last / "samples.jsonl").read_text() == (run / "samples.jsonl").read_text()  # as it was at the end
    records = [r for f in files for r in wandb_records(f)]
    wandb_config = {
        i.key: json.loads(i.value_json)
        for r in records
        if r.WhichOneof("record_type") == "config"
        for i in r.config.update
    }
    assert wandb_config["recipe_setting"] == 7
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "logs" / "tensorboard" / state["tensorboard"]["run_id"]))
    acc.Reload()
    assert "run_config/text_summary" in acc.Tags()["tensors"]


def test_a_fresh_run_starts_new_tracker_runs(tmp_path):
    """Training again from scratch in a dir (no checkpoint to resume) opens new tracker runs, each from step 1."""
    run = tmp_path / "run"
    make_trainer(run, loggers=("tensorboard", "mlflow"), save_every=100, max_steps=2).fit()
    first = json.loads((run / "logs" / "trackers.json").read_text())
    for ckpt in (run / "checkpoints").iterdir():
        for f in ckpt.iterdir():
            f.unlink()
        ckpt.rmdir()
    make_trainer(run, loggers=("tensorboard", "mlflow"), save_every=100, max_steps=2).fit()
    second = json.loads((run / "logs" / "trackers.json").read_text())
    assert all(first[k]["run_id"] != second[k]["run_id"] for k in first)
    loss = [s for s, _ in mlflow_steps(run, second["mlflow"]["run_id"], ["loss"])["loss"]]
    assert loss == [1, 2]
    assert [s for s, _ in tensorboard_steps(run, second["tensorboard"]["run_id"])["loss"]] == [1, 2]


def test_only_rank_0_logs(tmp_path, monkeypatch):
    import gpt1.training.trainer as trainer_mod

    monkeypatch.setattr(trainer_mod, "dist_env", lambda: (1, 1, 0))  # rank 1 of a (one-process) world
    make_trainer(tmp_path / "run", loggers=("tensorboard",), max_steps=2).fit()
    assert not (tmp_path / "run" / "logs").exists()


def test_a_failing_tracker_is_dropped_and_training_goes_on(tmp_path, monkeypatch, caplog):
    class Flaky:
        name, run_id, where = "tensorboard", "x", "nowhere"
        closed = None

        def __init__(self, run_dir, run_id):
            self.rows = []

        def log_config(self, config):
            pass

        def log_metrics(self, row, step):
            if step == 2:
                raise ConnectionError("server gone")
            self.rows.append(step)

        def log_artifact(self, path):
            pass

        def close(self, status="finished"):
            Flaky.closed = status

    monkeypatch.setitem(trackers_mod.ADAPTERS, "tensorboard", Flaky)
    result = make_trainer(tmp_path / "run", loggers=("tensorboard",), max_steps=4).fit()
    assert result["step"] == 4 and Flaky.closed == "failed"
    assert "--logger tensorboard failed (ConnectionError: server gone)" in caplog.text
    assert [r["step"] for r in jsonl_rows(tmp_path / "run") if "val_loss" not in r] == [1, 2, 3, 4]


def test_wandb_goes_online_only_when_the_user_says_so(monkeypatch, tmp_path):
    assert not trackers_mod._wandb_logged_in()
    (tmp_path / "netrc").write_text("machine api.wandb.ai login user password " + "k" * 40 + "\n")
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    assert trackers_mod._wandb_logged_in()  # `wandb login` wrote the key: the user's own choice
    monkeypatch.setenv("NETRC", str(tmp_path / "none"))
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    assert trackers_mod._wandb_logged_in()


def test_flat_params():
    flat = trackers_mod.flat_params({"a": 1, "b": {"c": [1, 2], "d": None, "e": {}}, "f": "x"})
    assert flat == {"a": 1, "b.c": "[1, 2]", "b.d": "null", "b.e": "{}", "f": "x"}


# ---- the command line ----------------------------------------------------------------------------------------------
def test_logger_flag_is_repeatable_and_checked(tmp_path, monkeypatch, capsys):
    import sys

    from gpt1.cli.verbs import build_parser, main

    args = build_parser().parse_args(
        ["finetune-lm", "--data", "x.txt", "--out", "r", "--logger", "tensorboard", "--logger", "mlflow"]
    )
    assert args.logger == ["tensorboard", "mlflow"]
    for verb in ("pretrain", "finetune", "reproduce"):
        assert "--logger" in build_parser()._subparsers._group_actions[0].choices[verb].format_help()

    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main(["finetune-lm", "--data", "x.txt", "--out", str(tmp_path / "r"), "--logger", "neptune"])
    assert exit_.value.code == 2
    assert "invalid choice: 'neptune'" in capsys.readouterr().err

    monkeypatch.setitem(sys.modules, "wandb", None)  # as if not installed
    data = tmp_path / "jokes.txt"
    data.write_text("a joke\n")
    rc = main(
        ["finetune-lm", "--preset", "tiny", "--data", str(data), "--out", str(tmp_path / "r"), "--logger", "wandb"]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err[-1].endswith('--logger wandb needs the wandb package: pip install "gpt1[wandb]"'), err
    assert not (tmp_path / "r").exists()  # found before anything was read or written

    cfg = tmp_path / "c.yaml"
    cfg.write_text("logger: [tensorboard, nope]\n")
    rc = main(
        ["finetune-lm", "--config", str(cfg), "--preset", "tiny", "--data", str(data), "--out", str(tmp_path / "r")]
    )
    assert rc == 2 and "--logger 'nope' is not a tracker" in capsys.readouterr().err
