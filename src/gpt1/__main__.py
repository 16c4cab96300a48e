"""`python -m gpt1` (what `torchrun -m gpt1 ...` runs)."""

import sys

from gpt1.cli.verbs import main

sys.exit(main())
