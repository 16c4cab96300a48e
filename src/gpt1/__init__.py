"""gpt1: GPT-1 (Radford et al., 2018) as fast, practical software."""

from .config import PRESETS, GPT1Config
from .model import GPT, GPTOutput, KVCache

__version__ = "0.1.0"

# Names imported on first use, so `import gpt1` stays light for inference (spaCy, datasets, FastAPI load on demand).
_LAZY = {
    "Tokenizer": ".tokenizer",
    "generate": ".generation",
    "generate_text": ".generation",
    "stream_text": ".generation",
    "Decoder": ".generation",
    "Trainer": ".train",
    "TrainConfig": ".train",
    "prepare_corpus": ".data.corpus",
    "BlockSampler": ".data.corpus",
    "finetune_lm": ".finetune_lm",
    "demo": ".demo",
    "train_tokenizer": ".bpe_training",
    "classification_logits": ".heads",
    "entailment_logits": ".heads",
    "similarity_logits": ".heads",
    "multiple_choice_scores": ".heads",
    "create_app": ".serve",
}

# `finetune` and `evaluate` are also the names of their modules: import the modules first, then bind the functions,
# so that a later `import gpt1.evaluate` finds the module loaded and cannot replace the function attribute.
from . import evaluate as _evaluate_module  # noqa: E402,F401
from . import finetune as _finetune_module
from .finetune import evaluate, finetune  # noqa: E402

__all__ = ["GPT", "GPT1Config", "GPTOutput", "KVCache", "PRESETS", "evaluate", "finetune", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'gpt1' has no attribute {name!r}")
