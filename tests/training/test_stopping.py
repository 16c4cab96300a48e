"""Stopping and restarting runs: SIGTERM (a real signal) takes Ctrl-C's path, in one process and under DDP (one rank
signalled, all stop together); a diverging run stops at its first non-finite loss and keeps its last good
checkpoint; metrics.jsonl stays strict JSON; resume notes and refusals; weights follow the umask."""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from gpt1 import GPT, GPT1Config
from gpt1.data.corpus import BlockSampler
from gpt1.training.config import TrainConfig
from gpt1.training.state import find_latest_checkpoint
from gpt1.training.trainer import Trainer, lm_loss_fn

V, T = 64, 16


def tiny_model(seed: int = 0, n_layer: int = 2) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPT1Config(vocab_size=V, n_positions=T, n_embd=32, n_layer=n_layer, n_head=2))


def sampler() -> BlockSampler:
    tokens = np.random.default_rng(0).integers(0, V, 4000).astype(np.uint16)
    return BlockSampler(tokens, T, 2, rank=0, world_size=1)


def config(**kw) -> TrainConfig:
    base = dict(
        max_steps=6,
        warmup_steps=1,
        lr=1e-3,
        log_every=1,
        eval_every=100,
        save_every=2,
        progress=False,
        precision="fp32",
        device="cpu",
    )
    return TrainConfig(**{**base, **kw})


def strict_rows(path: Path) -> list[dict]:
    """metrics.jsonl parsed as strict JSON: a bare NaN or Infinity fails here."""

    def refuse(name):
        raise ValueError(f"non-JSON number {name} in {path}")

    return [json.loads(line, parse_constant=refuse) for line in path.read_text().splitlines()]


# ---- a diverging run -----------------------------------------------------------------------------------------------
def test_first_non_finite_loss_stops_before_its_update(tmp_path):
    from gpt1.training.stopping import TrainingDiverged

    calls = {"n": 0}

    def diverging(model, batch):
        calls["n"] += 1
        loss, n = lm_loss_fn(model, batch)
        return (loss * float("nan") if calls["n"] == 5 else loss), n  # step 5's loss is NaN

    run = tmp_path / "run"
    trainer = Trainer(tiny_model(), config(), sampler(), run, loss_fn=diverging)
    with pytest.raises(
        TrainingDiverged,
        match=r"training diverged at step 5: the loss is nan .*step_0000004, is kept; "
        r"try a lower learning rate \(--lr\)",
    ):
        trainer.fit()
    assert find_latest_checkpoint(run).name == "step_0000004"
    kept = GPT.from_pretrained(find_latest_checkpoint(run)).state_dict()
    now = trainer.model.state_dict()
    assert all(torch.equal(kept[k], now[k]) for k in kept)  # the NaN step never reached the weights
    assert [r["step"] for r in strict_rows(run / "metrics.jsonl")] == [1, 2, 3, 4]


def test_metrics_rows_write_null_for_non_finite_numbers(tmp_path):
    from gpt1.training.runlog import MetricsLog

    log = MetricsLog(tmp_path / "metrics.jsonl")
    log.append({"step": 1, "loss": float("nan"), "val_loss": float("inf"), "lr": np.float32(1e-3)})
    log.truncate_after(1)
    (row,) = strict_rows(tmp_path / "metrics.jsonl")
    assert row["loss"] is None and row["val_loss"] is None and row["lr"] == pytest.approx(1e-3)


def test_cli_diverging_run_is_one_line(tmp_path, vocab_dir):
    jokes = tmp_path / "jokes.csv"
    jokes.write_text(
        "Joke\n" + "".join(f"why did the chicken {i} cross the road? to get to the other side.\n" for i in range(60))
    )
    run = tmp_path / "run"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "gpt1",
            "finetune-lm",
            "--preset",
            "tiny",
            "--tokenizer",
            str(vocab_dir),
            "--data",
            str(jokes),
            "--text-column",
            "Joke",
            "--out",
            str(run),
            "--max-steps",
            "20",
            "--lr",
            "1e6",
            "--batch-size",
            "4",
            "--log-every",
            "1",
            "--no-progress",
            "--sample-prompt",
            "",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    (line,) = r.stderr.strip().splitlines()
    assert "training diverged at step" in line and "try a lower learning rate (--lr)" in line
    strict_rows(run / "metrics.jsonl")


# ---- resume notes and refusals ------------------------------------------------------------------------------------
def test_resume_auto_without_a_checkpoint_says_so(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="gpt1")
    Trainer(tiny_model(), config(max_steps=1), sampler(), tmp_path / "run").fit(resume="auto")
    assert f"--resume auto found no checkpoint in {tmp_path / 'run'}; starting a fresh run" in caplog.text


def test_resume_on_other_data_is_refused(tmp_path):
    run = tmp_path / "run"
    (tmp_path / "a.txt").write_text("a")
    (tmp_path / "b.txt").write_text("b")
    Trainer(tiny_model(), config(max_steps=2), sampler(), run, run_config={"data": [str(tmp_path / "a.txt")]}).fit()
    same = Trainer(tiny_model(), config(max_steps=3), sampler(), run, run_config={"data": str(tmp_path / "a.txt")})
    assert same.fit(resume="auto")["step"] == 3  # the same file, written as a string this time
    other = Trainer(tiny_model(), config(max_steps=4), sampler(), run, run_config={"data": [str(tmp_path / "b.txt")]})
    with pytest.raises(
        ValueError,
        match=r"--resume auto: .* was trained on --data .*a.txt, but this run names "
        r"--data .*b.txt",
    ):
        other.fit(resume="auto")


def test_resume_with_other_layer_count_names_the_counts(tmp_path):
    from gpt1.checkpoint import CheckpointError

    run = tmp_path / "run"
    Trainer(tiny_model(n_layer=3), config(max_steps=2), sampler(), run).fit()
    with pytest.raises(CheckpointError, match=r"holds a 3-layer model, but the model it is loaded into has 2 layers"):
        Trainer(tiny_model(n_layer=2), config(max_steps=4), sampler(), run).fit(resume="auto")


def test_weights_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        tiny_model().save_pretrained(tmp_path / "m")
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "m").iterdir()}
    assert modes["model.safetensors"] == modes["config.json"] == 0o644


# ---- SIGTERM ----------------------------------------------------------------------------------------------------
def test_stop_signals_under_ddp_only_raise_a_flag():
    from gpt1.training.stopping import ESCALATE_AFTER_S, StopSignals

    stop = StopSignals(distributed=True)
    stop._handle(signal.SIGTERM, None)
    stop._handle(signal.SIGINT, None)  # torchrun's forwarded copy, milliseconds later: no exception
    assert stop.requested and stop.signal_name == "SIGINT"
    stop._first_at -= ESCALATE_AFTER_S
    with pytest.raises(KeyboardInterrupt):  # asked again much later: a rank may be stuck, stop now
        stop._handle(signal.SIGTERM, None)
    with pytest.raises(KeyboardInterrupt):
        StopSignals(distributed=False)._handle(signal.SIGTERM, None)  # one process: Ctrl-C's path at once


def _corpus(tmp_path: Path) -> tuple[Path, Path, Path]:
    from test_train import _corpus_and_tokenizer

    books, tok = _corpus_and_tokenizer(tmp_path)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        "preset: tiny\nmodel_overrides: {n_layer: 2, n_embd: 32, n_head: 2, n_positions: 32}\n"
        "batch_tokens: 128\nmax_steps: 5000\nlr: 1.0e-3\nwarmup: 1\nlog_every: 1\neval_every: 100000\n"
        "save_every: 100000\nprecision: fp32\ndevice: cpu\nval_fraction: 0.2\n"
    )
    return books, tok, cfg


def _start(tmp_path: Path, *extra: str) -> tuple[subprocess.Popen, Path, list[str]]:
    books, tok, cfg = _corpus(tmp_path)
    run = tmp_path / "run"
    common = ["pretrain", "--config", str(cfg), "--data", str(books), "--tokenizer", str(tok), "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "gpt1", *common, "--out", str(run), *extra],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return proc, run, common


def _wait_for_rows(proc: subprocess.Popen, run: Path, rows: int = 3, timeout: float = 180) -> None:
    deadline = time.time() + timeout
    while not ((run / "metrics.jsonl").exists() and len((run / "metrics.jsonl").read_text().splitlines()) >= rows):
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, "the run did not start logging"
        time.sleep(0.1)


def _checkpoint_matches_log(run: Path) -> int:
    """The saved checkpoint is exactly after the last logged step (a half-done step was rolled back)."""
    step = int(find_latest_checkpoint(run).name.split("_")[1])
    assert strict_rows(run / "metrics.jsonl")[-1]["step"] == step
    return step


def test_sigterm_saves_and_says_how_to_resume(tmp_path):
    proc, run, common = _start(tmp_path)
    _wait_for_rows(proc, run)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    assert "interrupted by SIGTERM: saving a checkpoint" in out
    assert f"resume with: gpt1 pretrain ... --out {run} --resume auto" in err and "Traceback" not in err
    step = _checkpoint_matches_log(run)
    again = subprocess.run(
        [sys.executable, "-m", "gpt1", *common, "--out", str(run), "--resume", "auto", "--max-steps", str(step + 2)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 0, again.stderr[-3000:]
    train_rows = [r for r in strict_rows(run / "metrics.jsonl") if "val_loss" not in r]  # the last step also evaluates
    assert [r["step"] for r in train_rows] == list(range(1, step + 3))  # no step lost or logged twice


def _rank_pid(rank: int, marker: str, timeout: float = 60) -> int:
    """The pid of torchrun's worker of `rank` whose command line mentions `marker`."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        for d in Path("/proc").iterdir():
            try:
                cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                env = (d / "environ").read_bytes().split(b"\0")
            except (OSError, ValueError):
                continue
            if marker in cmd and "launch_config.json" in cmd and f"RANK={rank}".encode() in env:
                return int(d.name)
        time.sleep(0.2)
    raise AssertionError(f"no worker of rank {rank} found")


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the worker processes through /proc")
def test_sigterm_to_one_ddp_rank_stops_all_ranks_together(tmp_path):
    """Only rank 1 is signalled; the flag rides on the step's all-reduce, so rank 0 stops at the same step and saves
    (a rank stopping alone would leave the other waiting in its next all-reduce)."""
    proc, run, common = _start(tmp_path, "--devices", "2")
    _wait_for_rows(proc, run, rows=3)
    os.kill(_rank_pid(1, str(run)), signal.SIGTERM)
    out, err = proc.communicate(timeout=120)  # no rank hangs
    assert "interrupted: saving a checkpoint at step" in out, (out[-2000:], err[-3000:])
    assert f"--out {run} --resume auto" in err
    step = _checkpoint_matches_log(run)
    assert json.loads((find_latest_checkpoint(run) / "trainer_state.json").read_text())["world_size"] == 2
    again = subprocess.run(
        [
            sys.executable,
            "-m",
            "gpt1",
            *common,
            "--out",
            str(run),
            "--resume",
            "auto",
            "--max-steps",
            str(step + 1),
            "--micro-batch",
            "2",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 0, again.stderr[-3000:]  # the agreed checkpoint resumes (here in one process)
    last = [r for r in strict_rows(run / "metrics.jsonl") if "val_loss" not in r][-1]
    assert last["step"] == step + 1 and math.isfinite(last["loss"])
