"""Where ../shared lives, and the skip for a checkout without it (a module, not conftest: several conftest files
exist, and `from conftest import` would find whichever loaded last)."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def require_shared(*parts: str) -> Path:
    """The path under ../shared, or skip the test when this checkout has no ../shared beside it."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent: this checkout has no ../shared data (CI has it)")
    return path
