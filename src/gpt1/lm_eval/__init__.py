"""gpt1 in EleutherAI's lm-evaluation-harness (`pip install "gpt1[eval]"`): importing this package registers the
model "gpt1" (`GPT1LM`); `TASK_DIR` is the GPT-1 task pack, for lm-eval's `--include_path`."""

from pathlib import Path

from gpt1.lm_eval.adapter import GPT1LM

TASK_DIR = Path(__file__).resolve().parent / "tasks"

__all__ = ["GPT1LM", "TASK_DIR"]
