"""Evaluation: task metrics, fine-tuned task evaluation, the paper's zero-shot heuristics, and LM loss / perplexity."""
