"""GPT-1's BPE tokenizer and a learner for new BPE vocabularies."""

from gpt1.tokenizer.bpe import Tokenizer

__all__ = ["Tokenizer"]
