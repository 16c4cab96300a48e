"""`gpt1 demo` run again, interrupted and resumed: a second run replaces the first (saying so), Ctrl-C exits 130 with
the resume command, a resume keeps the run's own tokenizer, and the jokes come from `best/`, naming its step."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

from gpt1.cli.verbs import main
from gpt1.training.state import find_latest_checkpoint


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_second_demo_replaces_the_first_and_jokes_come_from_best(tmp_path, capsys):
    out = tmp_path / "demo"
    args = ["demo", "--quick", "--out", str(out), "--steps", "2", "--num-jokes", "2"]
    assert main(args) == 0
    capsys.readouterr()
    assert main(args) == 0  # the README's first command, a second time
    printed = capsys.readouterr().out
    assert f"replacing the earlier demo run in {out} (it had reached step_0000002)" in printed
    assert f"gpt1 demo --out {out} --resume auto" in printed
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "val_loss" not in r] == [1, 2]  # only the new run's rows
    best_step = json.loads((out / "best" / "metrics.json").read_text())["step"]
    assert f"2 new jokes, from the weights of the best validation step, {best_step} of 2 ({out / 'best'})" in printed
    assert f"gpt1 generate --model {out / 'best'}" in printed


def test_demo_refuses_to_replace_a_run_that_is_not_a_demo(tmp_path, capsys):
    out = tmp_path / "run"
    (out / "checkpoints" / "step_0000002").mkdir(parents=True)
    (out / "checkpoints" / "step_0000002" / "trainer_state.json").write_text("{}")
    (out / "run_config.json").write_text(json.dumps({"kind": "finetune-lm", "data": "mine.csv"}))
    assert main(["demo", "--quick", "--out", str(out), "--steps", "2"]) == 2
    assert "holds checkpoints of a run that is not a demo run" in capsys.readouterr().err
    assert find_latest_checkpoint(out).name == "step_0000002"  # nothing deleted


def test_ctrl_c_exits_130_with_the_resume_command_and_resume_keeps_the_tokenizer(tmp_path, capsys):
    out = tmp_path / "demo"
    # Far more steps than run before the SIGINT lands: a quick demo does ~100 steps a second on an idle machine.
    cmd = [sys.executable, "-m", "gpt1", "demo", "--quick", "--out", str(out), "--steps", "30000", "--num-jokes", "2"]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
        # A shell starting the test suite in the background makes it ignore SIGINT, which children inherit: give
        # the demo the terminal's default back, so the signal below is the Ctrl-C a user would send.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.time() + 180
    while not ((out / "metrics.jsonl").exists() and (out / "metrics.jsonl").read_text().strip()):
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-3000:]
    step = int(find_latest_checkpoint(out).name.split("_")[1])
    assert f"interrupted at step {step}; the checkpoint is in {out}" in stdout and "new jokes" not in stdout
    assert f"resume with: gpt1 demo --out {out} --quick --steps 30000 --resume auto" in stderr
    tokenizer = {name: digest(out / name) for name in ("vocab.json", "merges.txt")}
    assert (
        main(["demo", "--quick", "--out", str(out), "--steps", str(step + 2), "--resume", "auto", "--num-jokes", "1"])
        == 0
    )
    assert f"resumed from {out / 'checkpoints' / f'step_{step:07d}'} at step {step}" in capsys.readouterr().out
    assert {name: digest(out / name) for name in tokenizer} == tokenizer  # the run's own vocabulary, not a new one
