"""Shared test fixtures: where ../shared lives, and reference (transformers) availability."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
VOCAB_DIR = SHARED / "data" / "gpt1-vocab"


def require_shared(*parts: str) -> Path:
    """The path under ../shared, or skip the test when this checkout has no ../shared beside it."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent: this checkout has no ../shared data (CI has it)")
    return path


@pytest.fixture(scope="session")
def vocab_dir() -> Path:
    return require_shared("data", "gpt1-vocab")


@pytest.fixture(scope="session")
def gpt1_tokenizer(vocab_dir):
    from gpt1 import Tokenizer

    return Tokenizer.from_pretrained(vocab_dir)
