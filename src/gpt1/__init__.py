"""gpt1: GPT-1 (Radford et al., 2018) as fast, practical software."""

from gpt1.config import PRESETS, GPT1Config
from gpt1.model.cache import KVCache
from gpt1.model.gpt import GPT, GPTOutput

__version__ = "0.1.0"

# Names imported on first use, so `import gpt1` stays light for inference (spaCy, datasets, FastAPI load on demand).
_LAZY = {
    "Tokenizer": "gpt1.tokenizer.bpe",
    "load": "gpt1.loading",
    "generate": "gpt1.inference.generate",
    "generate_text": "gpt1.inference.generate",
    "stream_text": "gpt1.inference.generate",
    "Decoder": "gpt1.inference.decoding",
    "Trainer": "gpt1.training.trainer",
    "TrainConfig": "gpt1.training.config",
    "prepare_corpus": "gpt1.data.corpus",
    "BlockSampler": "gpt1.data.corpus",
    "finetune": "gpt1.recipes.finetune",
    "evaluate": "gpt1.evaluation.evaluate",
    "pretrain": "gpt1.recipes.pretrain",
    "finetune_lm": "gpt1.recipes.finetune_lm",
    "demo": "gpt1.recipes.demo",
    "train_tokenizer": "gpt1.tokenizer.learn_bpe",
    "classification_logits": "gpt1.model.heads",
    "entailment_logits": "gpt1.model.heads",
    "similarity_logits": "gpt1.model.heads",
    "multiple_choice_scores": "gpt1.model.heads",
    "create_app": "gpt1.serving.app",
}

__all__ = ["GPT", "GPT1Config", "GPTOutput", "KVCache", "PRESETS", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'gpt1' has no attribute {name!r}")
