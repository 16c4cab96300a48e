"""Shared test fixtures: GPT-1's vocabulary and tokenizer from ../shared."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared_data import require_shared


@pytest.fixture(scope="session")
def vocab_dir() -> Path:
    return require_shared("data", "gpt1-vocab")


@pytest.fixture(scope="session")
def gpt1_tokenizer(vocab_dir):
    from gpt1 import Tokenizer

    return Tokenizer.from_pretrained(vocab_dir)
