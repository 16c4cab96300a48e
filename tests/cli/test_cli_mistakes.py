"""User mistakes through the real `gpt1` entry point (`python -m gpt1` in a subprocess): each class ends with exit
code 2, one line on stderr naming the flag and value, no traceback, and nothing written. Offline hub fallbacks must
fail within seconds; checks run before any download, model load or evaluation."""

from __future__ import annotations

import argparse
import json
import os
import string
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from gpt1 import GPT, GPT1Config


def gpt1(*args: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}
    t0 = time.perf_counter()
    r = subprocess.run(
        [sys.executable, "-m", "gpt1", *args], capture_output=True, text=True, env=full_env, cwd=cwd, timeout=120
    )
    r.elapsed = time.perf_counter() - t0
    return r


def assert_one_line(r: subprocess.CompletedProcess, *fragments: str) -> None:
    """Exit code 2, exactly one line on stderr (no traceback), containing every fragment."""
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr[-2000:]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """A small model dir (a toy alphabet tokenizer, eos added as finetune-lm does) and good and bad input files."""
    from gpt1.tokenizer.bpe import Tokenizer

    root = tmp_path_factory.mktemp("mistakes")
    tok_dir = root / "tok"
    tok_dir.mkdir()
    vocab = ["<unk>"] + list(string.ascii_lowercase) + [c + "</w>" for c in string.ascii_lowercase + ".,:?!'"]
    (tok_dir / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab + ["\n</w>"])}))
    (tok_dir / "merges.txt").write_text("#version: 0.2\n")
    tok = Tokenizer.from_pretrained(tok_dir)
    tok.add_special_tokens(["<|endoftext|>"])
    torch.manual_seed(0)
    model = GPT(GPT1Config(vocab_size=len(tok), n_positions=64, n_embd=32, n_layer=2, n_head=2))
    model.config.extra["eos_token_id"] = len(tok) - 1
    model.save_pretrained(root / "model", tokenizer=tok)
    data = root / "data"
    data.mkdir()
    (data / "jokes.csv").write_text("Joke\n" + "".join(f"a joke number {i} about cats.\n" for i in range(40)))
    (data / "text.txt").write_text("the cat sat on the mat. " * 40)
    (data / "empty.csv").write_bytes(b"")
    (data / "header.csv").write_text("Joke\n")
    (data / "latin1.csv").write_bytes("Joke\ncaf\xe9 au lait\n".encode("latin-1"))
    (data / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    (data / "binary.txt").write_bytes(bytes(range(256)) * 8)
    (data / "adir").mkdir()
    (root / "afile").write_text("keep me\n")
    return {"root": root, "model": root / "model", "tok": tok_dir, "data": data, "afile": root / "afile"}


# ---- every case: one subprocess each, three at a time (each mostly imports torch) -----------------------------------
_FT = ["finetune-lm", "--model", "{model}", "--out", "{out}", "--no-progress"]
_FT_JOKES = [*_FT, "--data", "{data}/jokes.csv", "--text-column", "Joke", "--max-steps", "1"]
_GEN = ["generate", "--model", "{model}", "--prompt", "a"]
_NO_HUB = {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": "{hub}"}  # nothing cached, nothing fetched
# name: (arguments, fragments of the one stderr line, extra environment)
CASES = {
    # offline hub fallbacks: within seconds, one line, the flag to pass instead
    "hub-tokenize": (
        ["tokenize", "hello"],
        ["no --tokenizer given", "--tokenizer DIR", "encoder_bpe_40000.json"],
        _NO_HUB,
    ),
    "hub-finetune-lm-preset": (
        ["finetune-lm", "--preset", "tiny", "--data", "{data}/jokes.csv", "--text-column", "Joke", "--out", "{out}"],
        ["no --tokenizer given", "--tokenizer DIR"],
        _NO_HUB,
    ),
    "hub-demo-model": (
        ["demo", "--model", "openai-community/openai-gpt", "--out", "{out}"],
        ["--model openai-community/openai-gpt", "without --model", "trains offline"],
        _NO_HUB,
    ),
    "hub-path-like-model": (
        ["generate", "--model", "runs/nope", "--prompt", "hi"],
        ["--model runs/nope: no such directory", "hub"],
        _NO_HUB,
    ),
    # without HF_HUB_OFFLINE, a hub that refuses connections is noticed by one short probe, not 25 s of retries
    "hub-unreachable": (
        ["tokenize", "hello"],
        ["no --tokenizer given", "127.0.0.1 cannot be reached"],
        {
            "HF_ENDPOINT": "http://127.0.0.1:9",
            "HF_HUB_CACHE": "{hub}",
            "HF_HUB_OFFLINE": "0",
            **{v: "" for v in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")},
        },
    ),
    "unknown-preset": (
        ["pretrain", "--preset", "huge", "--data", "{data}/text.txt", "--out", "{out}"],
        ["--preset 'huge' is not a preset", "gpt1, small, mini, tiny"],
        _NO_HUB,
    ),
    # output paths, checked before the work
    "out-is-a-file": (
        [*_FT, "--data", "{data}/jokes.csv", "--out", "{afile}"],
        ["--out {afile}: is an existing file"],
        None,
    ),
    "out-under-a-file": (
        [*_FT, "--data", "{data}/jokes.csv", "--out", "{afile}/run"],
        ["--out {afile}/run:", "is a file, so nothing can be created under it"],
        None,
    ),
    "out-unwritable": (
        [*_FT, "--data", "{data}/jokes.csv", "--out", "/sys/gpt1-test-run"],
        ["--out /sys/gpt1-test-run: cannot write in /sys"],
        None,
    ),
    "output-unwritable": (
        ["evaluate", "--model", "{model}", "--perplexity", "{data}/text.txt", "--output", "/sys/gpt1-test.json"],
        ["--output /sys/gpt1-test.json: cannot write in /sys"],
        None,
    ),
    # text-file arguments
    "prompt-file-dir": (
        ["generate", "--model", "{model}", "--prompt-file", "{data}/adir"],
        ["--prompt-file {data}/adir: a directory, not a file"],
        None,
    ),
    "prompt-file-latin1": (
        ["generate", "--model", "{model}", "--prompt-file", "{data}/latin1.txt"],
        ["--prompt-file {data}/latin1.txt: not UTF-8 (byte 0xe9 at offset 3)"],
        None,
    ),
    "perplexity-dir": (
        ["evaluate", "--model", "{model}", "--perplexity", "{data}/adir"],
        ["--perplexity {data}/adir: a directory, not a file"],
        None,
    ),
    # data files that say what is wrong with them
    "data-empty-csv": ([*_FT, "--data", "{data}/empty.csv"], ["empty.csv: the file is empty"], None),
    "data-header-only": ([*_FT, "--data", "{data}/header.csv"], ["header.csv: has a header line but no rows"], None),
    "data-latin1-csv": ([*_FT, "--data", "{data}/latin1.csv"], ["latin1.csv: not UTF-8 (byte 0xe9 at offset 8)"], None),
    "data-binary-txt": (
        [*_FT, "--data", "{data}/binary.txt"],
        ["binary.txt: not UTF-8 (byte 0x80 at offset 128)"],
        None,
    ),
    # nonsense values, refused by their flag
    "num-beams": ([*_GEN, "--num-beams", "0"], ["--num-beams 0 is invalid"], None),
    "num-samples": ([*_GEN, "--num-samples", "0"], ["--num-samples 0 is invalid"], None),
    "temperature-nan": ([*_GEN, "--temperature", "nan"], ["--temperature nan is invalid"], None),
    "truncate-left": (
        ["generate", "--model", "{model}", "--prompt", "a " * 60, "--max-new-tokens", "10"],
        ["lower --max-new-tokens, or pass --truncate-left."],
        None,
    ),
    "device": ([*_GEN, "--device", "tpu"], ["--device 'tpu' is not a device"], None),
    "stride": (
        ["evaluate", "--model", "{model}", "--perplexity", "{data}/text.txt", "--stride", "0"],
        ["--stride 0 must be in 1..64"],
        None,
    ),
    "demo-lr": (["demo", "--lr", "0", "--out", "{out}"], ["--lr 0.0 is invalid"], None),
    "max-length": (
        [*_FT_JOKES, "--max-length", "100000"],
        ["--max-length 100000 is outside this model's range: use 2..64"],
        None,
    ),
    "lr": ([*_FT_JOKES, "--lr", "-1"], ["--lr -1.0 is invalid"], None),
}


@pytest.fixture(scope="module")
def case_results(files, tmp_path_factory) -> dict:
    """Every case of CASES run once, concurrently."""
    from concurrent.futures import ThreadPoolExecutor

    outs = tmp_path_factory.mktemp("case-outs")

    def run(name):
        fill = {
            "model": files["model"],
            "data": files["data"],
            "out": outs / name,
            "afile": files["afile"],
            "hub": outs / f"{name}-hub",
        }
        args, expected, env = CASES[name]
        env = {k: v.format(**fill) for k, v in (env or {}).items()}
        r = gpt1(*[a.format(**fill) for a in args], env=env, cwd=outs)
        return r, [e.format(**fill) for e in expected], outs / name

    with ThreadPoolExecutor(3) as pool:
        return dict(zip(CASES, pool.map(run, CASES)))


@pytest.mark.parametrize("name", list(CASES))
def test_mistake_gives_one_line_naming_the_flag(case_results, files, name):
    if "unwritable" in name and not Path("/sys").is_dir():
        pytest.skip("needs Linux's /sys (unwritable even for root)")
    r, expected, out = case_results[name]
    assert_one_line(r, *expected)
    assert not out.exists()  # nothing written
    assert r.elapsed < 30  # hub fallbacks included: ~3 s, most of it importing torch (it was ~25 s of retries)
    if name == "output-unwritable":
        assert r.stdout == ""  # refused before evaluating, not after printing the metrics
    assert files["afile"].read_text() == "keep me\n"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a CPU-only machine")
def test_cuda_on_a_machine_without_it(files):
    r = gpt1("generate", "--model", str(files["model"]), "--prompt", "a", "--device", "cuda")
    assert_one_line(r, "--device cuda:", "use --device cpu")


def test_config_file_values_get_the_flags_types(files, tmp_path):
    from gpt1.cli.checks import UserError, coerce_settings
    from gpt1.cli.verbs import build_parser, verb_parser

    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("max_steps: ten\n")
    r = gpt1("pretrain", "--config", str(cfg), "--data", str(files["data"] / "text.txt"), "--out", str(tmp_path / "r"))
    assert_one_line(r, "--max-steps 'ten' (from", "cfg.yaml) is invalid: 'ten' is not a number")
    parser = verb_parser(build_parser(), "pretrain")
    # YAML reads 3e-4 (no dot) as a string and quoted numbers as strings: both become the flag's type
    assert coerce_settings({"max_steps": "10", "lr": "3e-4", "compile": True}, parser, "f") == {
        "max_steps": 10,
        "lr": 3e-4,
        "compile": True,
    }
    with pytest.raises(UserError, match=r"--schedule 'cos' \(from f\) is invalid: use one of cosine, linear, constant"):
        coerce_settings({"schedule": "cos"}, parser, "f")
    with pytest.raises(UserError, match="takes true or false"):
        coerce_settings({"compile": "yes please"}, parser, "f")


# ---- help, version, tokenize -------------------------------------------------------------------------------------------
def test_version_and_help_of_every_verb_and_option(capsys):
    from gpt1.cli.verbs import build_parser, main

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == "gpt1 0.1.0"
    parser = build_parser()
    verbs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    for name, sub in verbs.items():
        assert sub.description, f"gpt1 {name} --help has no description"
        for action in sub._actions:
            assert action.help, f"gpt1 {name}: {action.option_strings or action.dest} has no help"
        assert "%%" not in sub.format_help(), name


def test_tokenize_shows_the_newline_token_on_one_line(vocab_dir, capsys):
    from gpt1.cli.verbs import main

    assert main(["tokenize", "--tokenizer", str(vocab_dir), "one\ntwo"]) == 0
    assert capsys.readouterr().out.splitlines() == ["one</w> \\n</w> two</w>"]


def test_reader_says_empty_and_blank_for_text_files(tmp_path):
    from gpt1.data.readers import load_records

    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "blank.txt").write_text("\n  \n\n")
    with pytest.raises(ValueError, match=r"empty.txt: the file is empty"):
        load_records(tmp_path / "empty.txt")
    rows = load_records(tmp_path / "blank.txt")["text"]  # datasets reads blank lines as empty records...
    assert all(not r.strip() for r in rows)  # ...which finetune-lm then reports as "no non-empty texts"


def test_flagify_names_flags_not_python_arguments():
    from gpt1.cli.checks import flagify

    flags = {
        "max_new_tokens": "--max-new-tokens",
        "truncate_left": "--truncate-left",
        "lr": "--lr",
        "resume": "--resume",
        "max_steps": "--max-steps",
    }
    assert flagify("max_new_tokens=10 is too many; lower max_new_tokens, or pass truncate_left=True.", flags) == (
        "--max-new-tokens 10 is too many; lower --max-new-tokens, or pass --truncate-left."
    )
    assert flagify("Invalid training settings: lr=-1.0 must be > 0; resume='auto'.", flags) == (
        "Invalid training settings: --lr -1.0 must be > 0; --resume auto."
    )
    # paths and file names that contain a flag's Python name are left alone
    assert (
        flagify("runs/lr=1/x and max_steps.csv and data/max_steps/x", flags)
        == "runs/lr=1/x and max_steps.csv and data/max_steps/x"
    )
