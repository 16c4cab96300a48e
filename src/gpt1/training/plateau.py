"""The plateau guard: one warning when a language model's training loss still sits at the unigram entropy of its
data after a budget of tokens, i.e. it predicts word frequencies and ignores context.

A post-LayerNorm transformer (GPT-1's blocks) trained with a learning rate too high for its depth sits at exactly
that level for millions of tokens without diverging, so nothing else looks wrong; `benchmarks/lr_sweep.py` measures
where it happens. The guard looks once, after warmup and after `after_tokens`, and either stays quiet for the rest
of the run (the loss has left the plateau) or says what is likely wrong.
"""

from __future__ import annotations

from dataclasses import dataclass

MARGIN = 0.1  # nats: a loss above (unigram entropy - MARGIN) has learned next to nothing from context


@dataclass
class PlateauGuard:
    unigram_entropy: float
    after_tokens: int = 1_000_000
    hint: str = "lower the learning rate (e.g. --lr 2.5e-4) and warm up for longer"
    checked: bool = False

    def check(self, loss: float, tokens_seen: int, step: int, warmup_steps: int, lr: float) -> str | None:
        """The warning to show now, or None; answers at most once per run."""
        if self.checked or tokens_seen < self.after_tokens or step < warmup_steps:
            return None
        self.checked = True
        if loss < self.unigram_entropy - MARGIN:
            return None
        return (
            f"warning: after {tokens_seen:,} tokens (step {step}) the training loss {loss:.3f} is still at the "
            f"unigram entropy of the data ({self.unigram_entropy:.3f} nats): the model predicts word frequencies "
            f"and ignores context. The usual cause is a peak learning rate too high for a post-LN model of this "
            f"depth (this run: lr {lr:g}, warmup {warmup_steps} steps); {self.hint}."
        )
