"""A run's metrics: `metrics.jsonl` (one JSON object per line) and the `loss.png` curves drawn from it."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any


class MetricsLog:
    """Appends rows to `metrics.jsonl`; on resume, drops rows past the resumed step so no step appears twice."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def append(self, row: dict[str, Any]) -> None:
        with self.path.open("a") as f:
            f.write(json_line(row) + "\n")

    def rows(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut short by a kill mid-write
        return out

    def truncate_after(self, step: int) -> None:
        """Keep only rows with `step <= step` (rewritten atomically)."""
        if not self.path.exists():
            return
        kept = [r for r in self.rows() if r.get("step", 0) <= step]
        tmp = self.path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(json_line(r) + "\n" for r in kept))
        os.replace(tmp, self.path)


def json_line(row: dict[str, Any]) -> str:
    """One row as strict JSON: NaN and infinities (which `json.dumps` would write bare) become null."""
    clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}
    return json.dumps(clean, default=_number, allow_nan=False)


def _number(x: Any) -> Any:
    """numpy / torch scalars as floats (null when not finite)."""
    value = float(x)
    return value if math.isfinite(value) else None


def plot_losses(rows: list[dict[str, Any]], out_path: str | Path, title: str = "") -> Path:
    """Draw train `loss` and eval `val_loss` against `step` into a PNG (matplotlib's Agg backend, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(r["step"], r["loss"]) for r in rows if _finite(r.get("loss")) and "val_loss" not in r]
    val = [(r["step"], r["val_loss"]) for r in rows if _finite(r.get("val_loss"))]
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    if train:
        ax.plot(*zip(*train), label="train loss", linewidth=1.2)
    if val:
        ax.plot(*zip(*val), "o-", label="val loss", linewidth=1.5, markersize=3)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title(title or "loss")
    ax.grid(alpha=0.3)
    if train or val:
        ax.legend()
    fig.tight_layout()
    out_path = Path(out_path)
    tmp = out_path.with_name(out_path.stem + ".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, out_path)
    return out_path


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)
