"""The CUDA paths, run by `scripts/gpu-check.sh` on a machine with a GPU and skipped everywhere else: parity with
transformers in fp32 and bf16, training with and without `torch.compile`, exact resume, a one-GPU `torchrun`
run, generation and the server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from gpt1 import GPT, BlockSampler, GPT1Config, TrainConfig, Trainer, generate

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (scripts/gpu-check.sh runs these)"),
]
transformers = pytest.importorskip("transformers", reason="transformers 4.x is the reference implementation")

V, T = 512, 64


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """HF's LM model and ours with the same random weights at the full `gpt1` size, both on the GPU in fp32."""
    torch.manual_seed(0)
    hf = transformers.OpenAIGPTLMHeadModel(transformers.OpenAIGPTConfig()).eval()
    path = tmp_path_factory.mktemp("hf")
    hf.save_pretrained(path)
    ours = GPT.from_pretrained(path).eval()
    return hf.cuda(), ours.cuda()


@pytest.fixture(scope="module")
def ids():
    return torch.randint(0, 40478, (2, 128), generator=torch.Generator().manual_seed(1)).cuda()


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 2e-3), (torch.bfloat16, 0.25)])
def test_logits_and_loss_match_hf(pair, ids, dtype, tol):
    hf, ours = pair
    with torch.no_grad(), torch.autocast("cuda", dtype=dtype, enabled=dtype != torch.float32):
        ref, got = hf(ids, labels=ids), ours(ids, labels=ids)
    assert (ref.logits.float() - got.logits.float()).abs().max().item() < tol
    assert abs(ref.loss.item() - got.loss.item()) < tol / 10


def test_greedy_matches_hf(pair, ids):
    hf, ours = pair
    prompt = ids[:1, :16]
    with torch.no_grad():
        ref = hf.generate(prompt, max_new_tokens=64, do_sample=False, pad_token_id=0)
    got = generate(ours, prompt, max_new_tokens=64)
    got = got.sequences if hasattr(got, "sequences") else got
    assert torch.equal(ref.cpu(), got.cpu())


def tiny_model(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPT1Config(vocab_size=V, n_positions=T, n_embd=64, n_layer=2, n_head=2))


def tokens(n: int = 20_000) -> np.ndarray:
    pattern = np.random.default_rng(0).integers(0, V, 24)
    return np.tile(pattern, n // 24 + 1)[:n].astype(np.uint16)


def losses(run: Path) -> list[float]:
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r and "val_loss" not in r]


def trainer(run: Path, compile_: bool = False, precision: str = "bf16") -> Trainer:
    cfg = TrainConfig(
        max_steps=40,
        warmup_steps=5,
        lr=3e-3,
        log_every=1,
        eval_every=1000,
        save_every=20,
        progress=False,
        precision=precision,
        device="cuda",
        compile=compile_,
    )
    return Trainer(tiny_model(), cfg, BlockSampler(tokens(), T, 16, seed=0, rank=0, world_size=1), run)


@pytest.mark.parametrize("compile_", [False, True], ids=["eager", "compile"])
def test_training_learns_on_the_gpu(tmp_path, compile_):
    result = trainer(tmp_path, compile_).fit()
    first = losses(tmp_path)[0]
    assert first > 5.5 and result["loss"] < 1.0  # from ~ln(512) = 6.2 nats to a learned period-24 pattern


def test_exact_resume_on_the_gpu(tmp_path):
    """Ctrl-C at step 21, resume: the losses of a run never stopped, no step lost or repeated."""
    trainer(tmp_path / "straight", precision="fp32").fit()
    stopped = trainer(tmp_path / "stopped", precision="fp32")
    calls = {"n": 0}
    plain = stopped.loss_fn

    def interrupting(model, batch):
        calls["n"] += 1
        if calls["n"] == 21:
            raise KeyboardInterrupt
        return plain(model, batch)

    stopped.loss_fn = interrupting
    assert stopped.fit()["interrupted"]
    trainer(tmp_path / "stopped", precision="fp32").fit(resume="auto")
    a, b = losses(tmp_path / "straight"), losses(tmp_path / "stopped")
    assert len(a) == len(b) == 40
    assert np.allclose(a, b, rtol=1e-5, atol=1e-6)  # cuBLAS may pick other kernels in a new process; not bitwise


def test_torchrun_one_gpu(tmp_path):
    books = tmp_path / "books"
    books.mkdir()
    rng = np.random.default_rng(0)
    words = "the cat sat on a mat and the dog ran far away".split()
    (books / "b.txt").write_text(" ".join(words[i] for i in rng.integers(0, len(words), 5000)) + "\n")
    vocab = Path(__file__).resolve().parents[2] / "shared" / "data" / "gpt1-vocab"
    if not vocab.is_dir():
        pytest.skip(f"needs GPT-1's vocabulary at {vocab}")
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    cmd = [
        sys.executable,
        "-m",
        "gpt1",
        "pretrain",
        "--data",
        str(books),
        "--tokenizer",
        str(vocab),
        "--preset",
        "tiny",
        "--max-steps",
        "20",
        "--devices",
        "1",
        "--device",
        "cuda",
        "--no-progress",
        "--out",
        str(tmp_path / "run"),
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "run" / "model.safetensors").exists()


def test_server_completes_on_the_gpu(pair):
    from fastapi.testclient import TestClient

    from gpt1 import Tokenizer, create_app

    vocab = Path(__file__).resolve().parents[2] / "shared" / "data" / "gpt1-vocab"
    if not vocab.is_dir():
        pytest.skip(f"needs GPT-1's vocabulary at {vocab}")
    _, ours = pair
    with TestClient(create_app(ours, Tokenizer.from_pretrained(vocab), "gpu")) as client:
        r = client.post(
            "/v1/completions", json={"model": "gpu", "prompt": "the night was", "max_tokens": 16, "ignore_eos": True}
        )
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens"] == 16
