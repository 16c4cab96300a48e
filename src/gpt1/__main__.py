"""`python -m gpt1` (what `torchrun -m gpt1 ...` runs)."""

import sys

from .cli import main

sys.exit(main())
