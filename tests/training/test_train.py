"""Trainer: schedule, decay groups, token-exact accumulation, run-dir contents, exact resume, atomic checkpoints,
Ctrl-C, and DDP equivalence (2 gloo processes vs 1), plus the `gpt1 pretrain` verb end to end."""

from __future__ import annotations

import json
import math
import os
import shutil
import string
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from gpt1 import GPT, GPT1Config
from gpt1.data.corpus import BlockSampler
from gpt1.evaluation.perplexity import evaluate_lm
from gpt1.kernels import dropout
from gpt1.runtime import resolve_precision
from gpt1.training.config import TrainConfig
from gpt1.training.optim import lr_multiplier, param_groups
from gpt1.training.state import find_latest_checkpoint
from gpt1.training.trainer import Trainer, lm_loss_fn

V, T = 64, 16


def tiny_model(seed: int = 0, dropout: float = 0.1) -> GPT:
    torch.manual_seed(seed)
    cfg = GPT1Config(
        vocab_size=V,
        n_positions=T,
        n_embd=32,
        n_layer=2,
        n_head=2,
        resid_pdrop=dropout,
        embd_pdrop=dropout,
        attn_pdrop=dropout,
    )
    return GPT(cfg)


def tokens(n: int = 4000, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, V, n).astype(np.uint16)


def config(**kw) -> TrainConfig:
    base = dict(
        max_steps=6,
        warmup_steps=2,
        lr=1e-3,
        log_every=1,
        eval_every=3,
        save_every=3,
        progress=False,
        precision="fp32",
        device="cpu",
        grad_accum=2,
    )
    return TrainConfig(**{**base, **kw})


def train_rows(run_dir: Path) -> list[tuple[int, float]]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in rows if "val_loss" not in r]


def val_fn():
    val = [{"input_ids": torch.from_numpy(tokens(2 * T, seed=7).astype(np.int64)).view(2, T)}]
    return lambda m: evaluate_lm(m, val)


# ---- schedule and optimizer groups ----------------------------------------------------------------------------
def test_schedule_values_at_chosen_steps():
    assert lr_multiplier(0, 101, 10, "cosine") == pytest.approx(0.1)  # warmup: (s+1)/W
    assert lr_multiplier(4, 101, 10, "linear") == pytest.approx(0.5)
    assert lr_multiplier(9, 101, 10, "cosine") == 1.0  # peak at the last warmup step
    assert lr_multiplier(55, 101, 10, "cosine") == pytest.approx(0.5)  # p = 46/92 = 1/2
    assert lr_multiplier(55, 101, 10, "linear") == pytest.approx(0.5)
    assert lr_multiplier(32, 101, 10, "cosine") == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.25)))  # p = 1/4
    assert lr_multiplier(100, 101, 10, "cosine") == pytest.approx(0.5 * (1 + math.cos(math.pi * 91 / 92)))
    assert 0 < lr_multiplier(100, 101, 10, "linear") < 0.011  # approaches 0 at the end
    assert lr_multiplier(70, 101, 10, "constant") == 1.0
    decay = [lr_multiplier(s, 101, 10, "cosine") for s in range(9, 101)]
    assert all(a > b for a, b in zip(decay, decay[1:]))
    assert lr_multiplier(0, 50, 0, "cosine") < 1.0  # no warmup: decay from the first step
    # the paper's defaults: 2000 warmup steps to 2.5e-4
    assert TrainConfig().lr * lr_multiplier(1999, 100_000, 2000, "cosine") == pytest.approx(2.5e-4)


def test_trainer_applies_the_schedule(tmp_path):
    cfg = config(max_steps=8, warmup_steps=3, grad_accum=1, schedule="linear")
    Trainer(tiny_model(), cfg, BlockSampler(tokens(), T, 2, rank=0, world_size=1), tmp_path).fit()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    lrs = {r["step"]: r["lr"] for r in rows}
    assert [lrs[s] for s in range(1, 9)] == pytest.approx(
        [1e-3 * lr_multiplier(s - 1, 8, 3, "linear") for s in range(1, 9)]
    )
    # and the optimizer really used them: after the run its lr is the next (past-the-end) value, 0
    frac = Trainer(tiny_model(), config(max_steps=1000, warmup_fraction=0.002), None, tmp_path / "x")
    assert frac.warmup == 2


def test_decay_groups_cover_matrices_only():
    model = tiny_model()
    model.task_head = torch.nn.Linear(32, 3)
    decay, no_decay = param_groups(model, 0.01)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    plain = {names[id(p)] for p in no_decay["params"]}
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    assert {
        "tokens_embed.weight",
        "positions_embed.weight",
        "h.0.attn.c_attn.weight",
        "h.1.mlp.c_proj.weight",
        "task_head.weight",
    } <= decayed
    assert {"h.0.ln_1.weight", "h.0.ln_1.bias", "h.0.attn.c_attn.bias", "task_head.bias"} <= plain
    assert all(p.dim() >= 2 for p in decay["params"]) and all(p.dim() == 1 for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))  # tied head once
    assert not any("lm_head" in n for n in decayed | plain)


# ---- one step's arithmetic ----------------------------------------------------------------------------------------
class ListSource:
    """Fixed micro-batches, in order: a BatchSource for exact arithmetic checks."""

    steps_per_epoch = None

    def __init__(self, batches):
        self.batches, self.i = batches, 0

    def next_batch(self):
        b = self.batches[self.i % len(self.batches)]
        self.i += 1
        return b

    def state_dict(self):
        return {"i": self.i}

    def load_state_dict(self, s):
        self.i = s["i"]


def first_step_grads(tmp_path, batches, accum, grad_clip: float = 0.0) -> dict[str, torch.Tensor]:
    trainer = Trainer(
        tiny_model(dropout=0.0),
        config(max_steps=1, grad_accum=accum, grad_clip=grad_clip),
        ListSource(batches),
        tmp_path,
    )
    trainer._setup()
    grads, step = {}, trainer.optimizer.step

    def capture(*a, **k):
        grads.update({n: p.grad.clone() for n, p in trainer.model.named_parameters()})
        return step(*a, **k)

    trainer.optimizer.step = capture
    trainer.fit()
    return grads


@pytest.mark.filterwarnings("ignore:Seems like:UserWarning")
def test_accumulation_is_token_exact(tmp_path):
    """Two micro-batches with 5 and 15 predicted tokens give the gradient of the 20-token mean, as one batch would."""
    x = torch.from_numpy(tokens(2 * T).astype(np.int64)).view(2, T)
    labels = x.clone()
    labels[0, 6:] = -100  # the first row predicts 5 tokens, the second 15
    a = first_step_grads(
        tmp_path / "a",
        [{"input_ids": x[:1], "labels": labels[:1]}, {"input_ids": x[1:], "labels": labels[1:]}],
        accum=2,
    )
    b = first_step_grads(tmp_path / "b", [{"input_ids": x, "labels": labels}], accum=1)
    for name in b:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-7)
    # the plain mean of the two micro-batch means would be a different gradient
    model = tiny_model(dropout=0.0)
    naive = sum(lm_loss_fn(model, {"input_ids": x[i : i + 1], "labels": labels[i : i + 1]})[0] for i in range(2)) / 2
    naive.backward()
    assert not torch.allclose(model.h[0].attn.c_attn.weight.grad, b["h.0.attn.c_attn.weight"], rtol=1e-3)


@pytest.mark.filterwarnings("ignore:Seems like:UserWarning")
def test_clipping_is_clip_grad_norm_of_the_mean_gradient(tmp_path):
    x = torch.from_numpy(tokens(2 * T).astype(np.int64)).view(2, T)
    batches = [{"input_ids": x[:1]}, {"input_ids": x[1:]}]
    raw = first_step_grads(tmp_path / "raw", batches, accum=2)
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in raw.values()]))
    assert norm > 0.05
    clipped = first_step_grads(tmp_path / "clipped", batches, accum=2, grad_clip=0.05)
    for name, g in raw.items():  # clip_grad_norm_'s rule: scale by max_norm / (norm + 1e-6) when that is below 1
        torch.testing.assert_close(clipped[name], g * (0.05 / (norm + 1e-6)), rtol=1e-5, atol=1e-8)
    unclipped = first_step_grads(tmp_path / "big", batches, accum=2, grad_clip=1e6)  # above the norm: unchanged
    for name, g in raw.items():
        torch.testing.assert_close(unclipped[name], g, rtol=1e-6, atol=0)


# ---- a whole run -------------------------------------------------------------------------------------------------
def test_run_dir_contents(tmp_path):
    from gpt1.tokenizer.bpe import Tokenizer

    tok_dir = tmp_path / "tok"
    tok_dir.mkdir()
    vocab = ["<unk>"] + list(string.ascii_lowercase) + [c + "</w>" for c in string.ascii_lowercase] + ["\n</w>"]
    vocab += [f"x{i}</w>" for i in range(V - 1 - len(vocab))]
    (tok_dir / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (tok_dir / "merges.txt").write_text("#version: 0.2\n")
    tok = Tokenizer.from_pretrained(tok_dir)
    tok.add_special_tokens(["<|endoftext|>"])
    run = tmp_path / "run"
    cfg = config(max_steps=7, eval_every=2, save_every=2, keep_last=2, log_every=2)
    trainer = Trainer(
        tiny_model(),
        cfg,
        BlockSampler(tokens(), T, 2, rank=0, world_size=1),
        run,
        evaluate_fn=val_fn(),
        tokenizer=tok,
        run_config={"note": "hi"},
    )
    result = trainer.fit()
    assert result["step"] == 7 and not result["interrupted"] and result["tokens"] == 7 * 2 * 2 * T
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all({"step", "loss", "lr", "tokens_per_s"} <= set(r) for r in rows)
    evals = [r for r in rows if "val_loss" in r]
    assert [r["step"] for r in evals] == [2, 4, 6, 7]
    assert all(r["val_ppl"] == pytest.approx(math.exp(r["val_loss"])) for r in evals)
    assert (run / "loss.png").stat().st_size > 1000
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_0000006", "step_0000007"]
    rc = json.loads((run / "run_config.json").read_text())
    train = rc["resolved"]["train"]
    assert rc["note"] == "hi" and train["max_steps"] == 7 and train["betas"] == [0.9, 0.999]
    assert TrainConfig.from_dict(train) == cfg
    # the run dir is a model dir: latest weights and the tokenizer, as HF expects them
    final = trainer.model.state_dict()
    for source in (run, find_latest_checkpoint(run)):
        loaded = GPT.from_pretrained(source).state_dict()
        assert loaded.keys() == final.keys() and all(torch.equal(loaded[k], final[k]) for k in final)
    assert Tokenizer.from_pretrained(run).token_to_id("<|endoftext|>") == V - 1  # the model's last embedding
    best = json.loads((run / "best" / "metrics.json").read_text())
    assert best["val_loss"] == min(r["val_loss"] for r in evals) == result["best"]
    assert GPT.from_pretrained(run / "best").config.n_layer == 2


def test_exact_resume_after_ctrl_c(tmp_path):
    """Stop (Ctrl-C mid-step) at step 4 of 6, resume: the same losses and weights as a run never stopped, bit for bit."""

    def make(run):
        return Trainer(
            tiny_model(seed=1),
            config(),
            BlockSampler(tokens(), T, 2, seed=3, rank=0, world_size=1),
            run,
            evaluate_fn=val_fn(),
        )

    straight = make(tmp_path / "a")
    straight.fit()

    calls = {"n": 0}

    def interrupting(model, batch):
        calls["n"] += 1
        if calls["n"] == 9:  # first micro-batch of step 5: a half-done step must be rolled back
            raise KeyboardInterrupt
        return lm_loss_fn(model, batch)

    stopped = make(tmp_path / "b")
    stopped.loss_fn = interrupting
    result = stopped.fit()
    assert result["interrupted"] and result["step"] == 4
    assert find_latest_checkpoint(tmp_path / "b").name == "step_0000004"
    resumed = make(tmp_path / "b").fit(resume="auto")
    assert resumed["step"] == 6 and not resumed["interrupted"]
    assert train_rows(tmp_path / "b") == train_rows(tmp_path / "a")  # exact float equality, all 6 steps
    a = GPT.from_pretrained(tmp_path / "a").state_dict()
    b = GPT.from_pretrained(tmp_path / "b").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert len(train_rows(tmp_path / "b")) == 6  # no duplicated rows after the resume


def test_checkpoint_save_killed_midway_leaves_the_previous_one(tmp_path, monkeypatch):
    import gpt1.training.trainer as train_mod

    run = tmp_path / "run"
    real_save, saves = torch.save, {"n": 0}

    def dying_save(obj, path, *a, **k):
        saves["n"] += 1
        if saves["n"] == 2:  # the step-4 checkpoint: write half a file, then "die"
            Path(path).write_bytes(b"partial")
            raise SystemExit("simulated kill during save")
        return real_save(obj, path, *a, **k)

    monkeypatch.setattr(train_mod.torch, "save", dying_save)

    def make():
        return Trainer(
            tiny_model(seed=2),
            config(save_every=2, grad_accum=1),
            BlockSampler(tokens(), T, 2, rank=0, world_size=1),
            run,
        )

    with pytest.raises(SystemExit):
        make().fit()
    monkeypatch.setattr(train_mod.torch, "save", real_save)
    assert find_latest_checkpoint(run).name == "step_0000002"  # the broken save is not "latest"
    assert (run / "checkpoints" / ".tmp-step_0000004").exists()
    with pytest.raises(ValueError, match="already holds checkpoints"):
        make().fit()  # a fresh start would silently mix two runs
    result = make().fit(resume="auto")
    assert result["step"] == 6
    assert not list((run / "checkpoints").glob(".tmp-*"))  # the next save cleaned up
    reference = tmp_path / "ref"
    Trainer(
        tiny_model(seed=2),
        config(save_every=2, grad_accum=1),
        BlockSampler(tokens(), T, 2, rank=0, world_size=1),
        reference,
    ).fit()
    assert train_rows(run) == train_rows(reference)


def test_bf16_autocast_and_precision_choice(tmp_path):
    assert resolve_precision("fp32", torch.device("cpu")) is None
    assert resolve_precision("bf16", torch.device("cpu")) is torch.bfloat16
    trainer = Trainer(
        tiny_model(),
        config(precision="bf16", max_steps=2, grad_accum=1),
        BlockSampler(tokens(), T, 2, rank=0, world_size=1),
        tmp_path,
    )
    result = trainer.fit()
    assert math.isfinite(result["loss"]) and trainer.model.tokens_embed.weight.dtype == torch.float32  # fp32 master


def test_bad_configs_are_clear(tmp_path):
    with pytest.raises(ValueError, match=r"schedule='cos' must be one of cosine, linear, constant"):
        TrainConfig(schedule="cos")
    with pytest.raises(ValueError, match=r"precision='fp16'"):
        TrainConfig(precision="fp16")
    with pytest.raises(ValueError, match="lr=-1"):
        TrainConfig(lr=-1, max_steps=1)
    with pytest.raises(ValueError, match="Unknown training setting"):
        TrainConfig.from_dict({"learning_rate": 1e-3})
    src = BlockSampler(tokens(), T, 2, rank=0, world_size=1)
    with pytest.raises(ValueError, match="exactly one of max_steps and epochs"):
        Trainer(tiny_model(), TrainConfig(max_steps=None), src, tmp_path)
    t = Trainer(tiny_model(), TrainConfig(epochs=2, grad_accum=2), src, tmp_path)
    assert t.total_steps == math.ceil(2 * src.steps_per_epoch / 2)
    with pytest.raises(ValueError, match="known length"):
        Trainer(tiny_model(), TrainConfig(epochs=1), ListSource([]), tmp_path)


# ---- the pretrain verb and DDP -------------------------------------------------------------------------------------
def _corpus_and_tokenizer(tmp_path: Path) -> tuple[Path, Path]:
    from gpt1.tokenizer.bpe import Tokenizer

    tok_dir = tmp_path / "tok"
    tok_dir.mkdir()
    vocab = ["<unk>"] + list(string.ascii_lowercase) + [c + "</w>" for c in string.ascii_lowercase + ".,"] + ["\n</w>"]
    (tok_dir / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (tok_dir / "merges.txt").write_text("#version: 0.2\n")
    Tokenizer.from_pretrained(tok_dir)
    words = "the cat sat on a mat and the dog ran far away".split()
    rng = np.random.default_rng(0)
    books = tmp_path / "books"
    books.mkdir()
    for i in range(6):
        (books / f"b{i}.txt").write_text(" ".join(words[j] for j in rng.integers(0, len(words), 400)) + ".\n")
    return books, tok_dir


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, "-m", "gpt1", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def test_ddp_two_gloo_processes_match_one_process(tmp_path):
    """`gpt1 pretrain --devices 2` (torchrun, gloo) gives the loss curve of 1 process with the same global batch."""
    books, tok_dir = _corpus_and_tokenizer(tmp_path)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        "preset: tiny\nmodel_overrides: {n_layer: 2, n_embd: 32, n_head: 2, n_positions: 32, resid_pdrop: 0.0, "
        "embd_pdrop: 0.0, attn_pdrop: 0.0}\nbatch-tokens: 128\nmax_steps: 4\nlr: 1.0e-2\nwarmup: 1\n"
        "log_every: 1\neval_every: 2\neval_blocks: 4\nprecision: fp32\ndevice: cpu\nval_fraction: 0.2\n"
    )
    common = ["pretrain", "--config", str(cfg), "--data", str(books), "--tokenizer", str(tok_dir), "--no-progress"]
    one = _cli(*common, "--out", str(tmp_path / "one"), "--micro-batch", "1", "--lr", "3e-3", cwd=tmp_path)
    assert one.returncode == 0, one.stderr[-3000:]
    two = _cli(*common, "--out", str(tmp_path / "two"), "--devices", "2", "--lr", "3e-3", cwd=tmp_path)
    assert two.returncode == 0, two.stderr[-3000:]
    rc1 = json.loads((tmp_path / "one" / "run_config.json").read_text())
    rc2 = json.loads((tmp_path / "two" / "run_config.json").read_text())
    # config file and flags compose: the flag's lr wins, the file's max_steps stays
    run1, run2 = rc1["resolved"], rc2["resolved"]
    assert rc1["lr"] == 3e-3 and run1["train"]["lr"] == 3e-3 and rc1["max_steps"] == 4
    assert (run1["world_size"], run1["micro_batch"], run1["grad_accum"]) == (1, 1, 4)
    assert (run2["world_size"], run2["micro_batch"], run2["grad_accum"]) == (2, 2, 1)
    rows1 = [json.loads(x) for x in (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()]
    rows2 = [json.loads(x) for x in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows1] == [r["step"] for r in rows2] == [1, 2, 2, 3, 4, 4]
    for r1, r2 in zip(rows1, rows2):
        assert abs(r1["loss"] - r2["loss"]) < 1e-5
        if "val_loss" in r1:
            assert abs(r1["val_loss"] - r2["val_loss"]) < 1e-5
    assert rows1[0]["loss"] != rows1[-1]["loss"]  # it trained
    assert GPT.from_pretrained(tmp_path / "two").config.vocab_size == 57  # 56 + <|endoftext|>


def test_pretrain_bad_input_is_one_line(tmp_path, capsys):
    from gpt1.cli.verbs import main

    books, tok_dir = _corpus_and_tokenizer(tmp_path)
    base = ["pretrain", "--tokenizer", str(tok_dir), "--preset", "tiny", "--max-steps", "1", "--no-progress"]
    short = tmp_path / "short.txt"
    short.write_text("the cat sat on the mat.\n")
    cases = [
        (["--data", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "r1")], "missing.txt: no such file"),
        (["--data", str(short), "--out", str(tmp_path / "r2"), "--val-fraction", "0"], "fewer than one block of 128"),
        (["--data", str(books), "--out", str(tmp_path / "r3"), "--batch-tokens", "200"], "not a multiple"),
        (["--data", str(books), "--out", str(tmp_path / "r4"), "--epochs", "1"], "exactly one of --max-steps"),
    ]
    bad_cfg = tmp_path / "bad.yaml"
    bad_cfg.write_text("learning_rate: 1\n")
    cases.append((["--config", str(bad_cfg)], "unknown setting(s) learning_rate"))
    for args, message in cases:
        capsys.readouterr()
        rc = main(base + args)
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and err[-1].startswith("gpt1 pretrain: error: ") and message in err[-1], (args, err)
        assert not any("Traceback" in line for line in err)


def test_pretrain_continues_from_weights_and_adds_the_eot_row(tmp_path):
    """--model: a 56-token model without <|endoftext|> gets one more embedding row; --max-tokens rounds to steps."""
    from gpt1.cli.verbs import main
    from gpt1.tokenizer.bpe import Tokenizer

    books, tok_dir = _corpus_and_tokenizer(tmp_path)
    torch.manual_seed(0)
    base = GPT(GPT1Config(vocab_size=56, n_positions=32, n_embd=32, n_layer=1, n_head=2))
    base.save_pretrained(tmp_path / "base", tokenizer=Tokenizer.from_pretrained(tok_dir))
    rc = main(
        [
            "pretrain",
            "--data",
            str(books),
            "--model",
            str(tmp_path / "base"),
            "--out",
            str(tmp_path / "run"),
            "--max-tokens",
            "300",
            "--batch-tokens",
            "128",
            "--lr",
            "1e-9",
            "--warmup",
            "0",
            "--no-progress",
        ]
    )
    assert rc == 0
    resolved = json.loads((tmp_path / "run" / "run_config.json").read_text())["resolved"]
    assert resolved["max_steps"] == 3 and resolved["global_batch_tokens"] == 128  # ceil(300 / 128)
    grown = GPT.from_pretrained(tmp_path / "run")
    assert (
        grown.config.vocab_size == 57 and Tokenizer.from_pretrained(tmp_path / "run").token_to_id("<|endoftext|>") == 56
    )
    old = base.tokens_embed.weight
    assert torch.allclose(grown.tokens_embed.weight[:56], old, atol=1e-6)  # lr 1e-9: the old rows are kept


def test_pretrain_on_a_prepared_corpus_uses_its_tokenizer(tmp_path, monkeypatch):
    """`gpt1 prepare` keeps the tokenizer files with the shards; `pretrain --data CORPUS` then needs no --tokenizer
    (and no network: the default hub tokenizer is never asked for)."""
    from gpt1.cli.verbs import main

    books, tok_dir = _corpus_and_tokenizer(tmp_path)
    assert main(["prepare", "--data", str(books), "--out", str(tmp_path / "corpus"), "--tokenizer", str(tok_dir)]) == 0
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    rc = main(
        [
            "pretrain",
            "--data",
            str(tmp_path / "corpus"),
            "--preset",
            "tiny",
            "--out",
            str(tmp_path / "run"),
            "--max-steps",
            "1",
            "--batch-tokens",
            "128",
            "--no-progress",
        ]
    )
    assert rc == 0
    assert GPT.from_pretrained(tmp_path / "run").config.vocab_size == 57  # the corpus's 56 tokens + <|endoftext|>


def test_trainer_learns_a_pattern(tmp_path):
    """A sanity check that the whole loop optimises: a period-12 token pattern is learned far below chance."""
    pattern = np.random.default_rng(0).integers(0, V, 12)
    data = np.tile(pattern, 400).astype(np.uint16)
    cfg = config(max_steps=60, warmup_steps=5, lr=3e-3, grad_accum=1, eval_every=60, save_every=60, log_every=5)
    result = Trainer(tiny_model(dropout=0.0), cfg, BlockSampler(data, T, 8, rank=0, world_size=1), tmp_path).fit()
    first = train_rows(tmp_path)[0][1]
    assert first > 3.5 and result["loss"] < 2.0  # from ~ln(64) = 4.16 nats (chance) to under half of it


@pytest.mark.skipif(
    shutil.which("c++") is None and shutil.which("g++") is None, reason="torch.compile on a CPU needs a C++ compiler"
)
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch's own, from inside the compiler
def test_compile_trains_like_eager(tmp_path):
    """`compile=True` on a CPU: the CPU dropout and attention run eagerly inside the compiled model, and without
    dropout the compiled run's losses equal the eager run's."""
    losses = []
    for compile_ in (False, True):
        run = tmp_path / str(compile_)
        cfg = config(max_steps=2, grad_accum=1, eval_every=10, save_every=10, compile=compile_)
        Trainer(tiny_model(dropout=0.0), cfg, BlockSampler(tokens(), T, 2, rank=0, world_size=1), run).fit()
        losses.append([loss for _, loss in train_rows(run)])
    assert np.allclose(losses[0], losses[1], rtol=1e-4)
    torch.manual_seed(0)
    x = torch.randn(2, 8, 4, requires_grad=True)
    compiled = torch.compile(lambda t: dropout(t, 0.5).sum())  # the CPU dropout, called from compiled code
    assert compiled(x).item() != 0 and torch.isfinite(torch.autograd.grad(compiled(x), x)[0]).all()
