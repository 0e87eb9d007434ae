"""A Markdown report: the comparison table of one or more finders and the pictures, in one folder."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..io.atomic import atomic_output
from .metrics import Evaluation

__all__ = ["comparison_rows", "format_table", "write_report"]

_COLUMNS = ("finder", "precision", "recall", "F1", "centroid median px", "centroid p95 px", "hit acc.", "frames/s")


def comparison_rows(
    evaluations: Mapping[str, Evaluation], frames_per_second: Mapping[str, float] | None = None
) -> list[list[str]]:
    """One row of formatted figures per finder, in the order of ``_COLUMNS``."""
    rows = []
    for name, ev in evaluations.items():
        fps = (frames_per_second or {}).get(name)
        hit = ev.hit_finding["accuracy"] if ev.hit_finding else float("nan")
        rows.append(
            [
                name,
                f"{ev.precision:.3f}",
                f"{ev.recall:.3f}",
                f"{ev.f1:.3f}",
                f"{ev.centroid_median_px:.3f}",
                f"{ev.centroid_p95_px:.3f}",
                f"{hit:.3f}",
                f"{fps:.2f}" if fps is not None else "-",
            ]
        )
    return rows


def format_table(rows: Sequence[Sequence[str]], *, markdown: bool = False) -> str:
    """The comparison rows as an aligned terminal table or a Markdown table."""
    header = list(_COLUMNS)
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    return "\n".join([fmt.format(*header), *(fmt.format(*r) for r in rows)])


def write_report(
    out_dir: str | Path,
    evaluations: Mapping[str, Evaluation],
    *,
    pictures: Mapping[str, str | Path] | None = None,
    frames_per_second: Mapping[str, float] | None = None,
    title: str = "braggml peak-finding report",
    notes: Sequence[str] = (),
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``report.md`` (table, per-finder details, pictures) and ``report.json`` into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = comparison_rows(evaluations, frames_per_second)
    lines = [f"# {title}", ""]
    lines += list(notes) + ([""] if notes else [])
    lines += [format_table(rows, markdown=True), ""]
    for name, ev in evaluations.items():
        lines += [f"## {name}", "", "```", *ev.table_lines(), "```", ""]
    for caption, picture in (pictures or {}).items():
        rel = Path(os.path.relpath(Path(picture).resolve(), out_dir.resolve())).as_posix()
        lines += [f"### {caption}", "", f"![{caption}]({rel})", ""]
    path = out_dir / "report.md"
    with atomic_output(path, mode="w") as fh:
        fh.write("\n".join(lines))
    payload = {
        "finders": {name: ev.to_dict() for name, ev in evaluations.items()},
        "frames_per_second": dict(frames_per_second or {}),
        **(extra or {}),
    }
    with atomic_output(out_dir / "report.json", mode="w") as fh:
        json.dump(payload, fh, indent=1)
    return path
