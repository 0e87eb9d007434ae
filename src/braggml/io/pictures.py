"""PNG pictures: a matplotlib figure made without a screen, written atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .atomic import atomic_output

__all__ = ["new_figure", "save_png"]


def new_figure(width: float = 6.4, height: float = 4.8) -> Any:
    """A matplotlib :class:`~matplotlib.figure.Figure` (Agg, no pyplot state), inches, 110 dpi, constrained layout."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=110, layout="constrained")


def save_png(fig: Any, path: str | Path) -> Path:
    """Write ``fig`` as a PNG under a temporary name and rename it into place; returns the path."""
    path = Path(path)
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png")
    return path
