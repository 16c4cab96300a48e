"""The command line: `gpt1 VERB ...`."""

from gpt1.cli.verbs import main

__all__ = ["main"]
