"""`gpt1 lm-eval`: lm-eval's table on stdout and its results JSON, with lm-eval's flag names in both spellings;
mistakes (a missing lm-eval, unknown tasks, bad values) end with one line and exit code 2."""

from __future__ import annotations

import builtins
import json

import pytest

from gpt1.cli import main


@pytest.fixture
def dprd_file(tmp_path):
    path = tmp_path / "dprd.csv"
    path.write_text(
        "sentence,option1,option2,answer\n"
        '"The trophy would not fit in the suitcase because _ was too big.",the trophy,the suitcase,1\n'
        '"Joan thanked Susan for the help _ had given.",Joan,Susan,2\n'
        '"The man could not lift his son because _ was so weak.",the man,the son,1\n'
    )
    return path


def _one_line(capsys, *fragments):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    for fragment in fragments:
        assert fragment in err[0], (fragment, err[0])


def test_lm_eval_prints_the_table_and_writes_the_results(tiny_dir, dprd_file, tmp_path, capsys):
    out = tmp_path / "out" / "dprd.json"
    argv = ["lm-eval", "--model", str(tiny_dir), "--tasks", "gpt1_dprd", "--task-data", f"dprd={dprd_file}"]
    assert main([*argv, "--batch_size", "2", "--num-fewshot", "1", "--output_path", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert "|gpt1_dprd|" in stdout and "acc_token" in stdout and f"wrote {out}" in stdout
    results = json.loads(out.read_text())
    assert results["n-samples"]["gpt1_dprd"]["effective"] == 3 and results["n-shot"]["gpt1_dprd"] == 1
    assert 0 <= results["results"]["gpt1_dprd"]["acc_token,none"] <= 1


def test_missing_lm_eval_is_one_line(tiny_dir, monkeypatch, capsys):
    real_import = builtins.__import__

    def no_lm_eval(name, *args, **kwargs):
        if name == "lm_eval" or name.startswith("lm_eval."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_lm_eval)
    assert main(["lm-eval", "--model", str(tiny_dir), "--tasks", "gpt1_sst2"]) == 2
    _one_line(capsys, 'lm-eval is not installed: pip install "gpt1[eval]"')


@pytest.mark.parametrize(
    "extra, fragments",
    [
        (["--tasks", "gpt1_sts"], ["Unknown task 'gpt1_sts' (did you mean gpt1_stsb"]),
        (["--tasks", "gpt1_sst2", "--task_data", "sst3=x"], ["--task_data 'sst3=x' is not KEY=PATH", "sst2"]),
        (["--tasks", "gpt1_sst2", "--limit", "0"], ["--limit 0 is invalid; use a count"]),
        (["--tasks", "gpt1_sst2", "--include_path", "/nonexistent/tasks"], ["/nonexistent/tasks: no such file"]),
        (["--tasks", "gpt1_sst2", "--model_args", "temperature=1"], ["temperature are not options of the gpt1"]),
    ],
)
def test_mistakes_are_one_line(tiny_dir, capsys, extra, fragments):
    assert main(["lm-eval", "--model", str(tiny_dir), *extra]) == 2
    _one_line(capsys, *fragments)
