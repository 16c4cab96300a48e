"""The CLI skeleton: help, info, tokenize, convert errors, and hub ids resolved from the local HF cache."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from gpt1 import GPT, GPT1Config
from gpt1.cli.verbs import main


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gpt1", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=300,
    )


def test_help_lists_verbs(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for verb in ("info", "tokenize", "convert"):
        assert verb in out


def test_info_preset(capsys):
    assert main(["info", "preset:gpt1"]) == 0
    out = capsys.readouterr().out
    assert "116,534,784" in out and "n_layer     12" in out


def test_user_errors_are_one_line_without_traceback(tmp_path):
    for args in (
        ["info", str(tmp_path / "missing")],
        ["convert", str(tmp_path), str(tmp_path / "o")],
        ["info", "preset:huge"],
    ):
        r = run_cli(*args)
        assert r.returncode == 2, r.stderr
        assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert r.stderr.startswith("gpt1 ")


def test_corrupt_checkpoint_via_cli(tmp_path):
    GPT(GPT1Config.from_preset("tiny")).save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"not a safetensors file")
    r = run_cli("info", str(tmp_path))
    assert r.returncode == 2 and "corrupt or truncated" in r.stderr and "Traceback" not in r.stderr


def test_tokenize_verb(vocab_dir, capsys):
    assert main(["tokenize", "--tokenizer", str(vocab_dir), "--ids", "Hello, my dog is cute and"]) == 0
    assert capsys.readouterr().out.split() == ["3570", "240", "547", "2585", "544", "4957", "488"]
    assert main(["tokenize", "--tokenizer", str(vocab_dir), "I don't know"]) == 0
    assert "n't</w>" in capsys.readouterr().out


def test_hub_id_resolves_from_local_cache_offline(tmp_path):
    """A hub id works offline once it is in the standard HF cache (the layout huggingface_hub writes)."""
    snapshot = tmp_path / "hub" / "models--someone--tiny-gpt" / "snapshots" / ("a" * 40)
    GPT(GPT1Config.from_preset("tiny")).save_pretrained(snapshot)
    (tmp_path / "hub" / "models--someone--tiny-gpt" / "refs").mkdir()
    (tmp_path / "hub" / "models--someone--tiny-gpt" / "refs" / "main").write_text("a" * 40)
    env = {"HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    r = run_cli("info", "someone/tiny-gpt", env=env)
    assert r.returncode == 0, r.stderr
    assert "n_layer     2" in r.stdout
    r = run_cli("info", "someone/not-cached", env=env)
    assert r.returncode == 2 and "not in the local cache" in r.stderr


def test_float16_is_refused_on_cpu(vocab_dir):
    r = run_cli(
        "generate", "--model", "preset:tiny", "--tokenizer", str(vocab_dir), "--prompt", "hi", "--dtype", "float16"
    )
    assert r.returncode == 2 and "slower than float32 on a CPU" in r.stderr and "Traceback" not in r.stderr
