"""gpt1: GPT-1 (Radford et al., 2018) as fast, practical software."""

from .config import GPT1Config, PRESETS
from .model import GPT, GPTOutput, KVCache

__all__ = ["GPT", "GPT1Config", "GPTOutput", "KVCache", "PRESETS", "Tokenizer"]
__version__ = "0.1.0"


def __getattr__(name):
    # The tokenizer pulls in spaCy; load it only when asked for.
    if name == "Tokenizer":
        from .tokenizer import Tokenizer

        return Tokenizer
    raise AttributeError(f"module 'gpt1' has no attribute {name!r}")
