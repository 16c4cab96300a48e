"""gpt1: GPT-1 (Radford et al., 2018) as fast, practical software."""

from .config import GPT1Config, PRESETS
from .model import GPT, GPTOutput, KVCache

__all__ = ["GPT", "GPT1Config", "GPTOutput", "KVCache", "PRESETS", "Tokenizer", "Trainer", "TrainConfig",
           "prepare_corpus", "BlockSampler", "create_app", "generate", "generate_text", "stream_text", "Decoder",
           "classification_logits", "entailment_logits", "similarity_logits", "multiple_choice_scores", "finetune",
           "evaluate", "finetune_lm", "demo", "train_tokenizer"]
__version__ = "0.1.0"


# Training names, imported on first use: `import gpt1` stays light for inference.
_LAZY = {"Trainer": ".train", "TrainConfig": ".train", "prepare_corpus": ".data.corpus", "BlockSampler": ".data.corpus"}  # fmt: skip
_LAZY.update(finetune_lm=".finetune_lm", demo=".demo", train_tokenizer=".bpe_training")  # LM fine-tuning, offline demo
_LAZY["create_app"] = ".serve"  # the HTTP app (FastAPI); `gpt1.serve.serve` runs it
_LAZY.update(generate=".generation", generate_text=".generation", stream_text=".generation", Decoder=".generation")
_LAZY.update(classification_logits=".heads", entailment_logits=".heads", similarity_logits=".heads",
             multiple_choice_scores=".heads")
# `finetune` and `evaluate` are also the names of their modules: import the modules first, then bind the functions,
# so that a later `import gpt1.evaluate` finds the module loaded and cannot replace the function attribute.
from . import evaluate as _evaluate_module, finetune as _finetune_module  # noqa: E402,F401
from .finetune import evaluate, finetune  # noqa: E402


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    # The tokenizer pulls in spaCy; load it only when asked for.
    if name == "Tokenizer":
        from .tokenizer import Tokenizer

        return Tokenizer
    raise AttributeError(f"module 'gpt1' has no attribute {name!r}")
