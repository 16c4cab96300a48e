"""Data: readers (the one file reader), batching (the epoch plan every batch source walks), corpus (pre-training
shards and blocks), text (LM fine-tuning examples), tasks (the task registry and reading), transforms (task inputs)."""
