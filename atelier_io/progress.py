"""Progress on a terminal, plain lines elsewhere: one display for every desktop command.

``screen()`` gives rich bars (per item: bytes, speed, ETA, plus any extra columns) when
stderr is a terminal or ``ATELIER_PROGRESS=1``, else :class:`Plain`, which prints the
messages and nothing else and never imports rich: a pipe, a log file or a benchmark
starts a third faster without it. Both print text without markup, so a file named
``model [pruned].safetensors`` prints as it is.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from typing import Any


class Plain:
    """Messages only; the progress calls do nothing."""

    def __enter__(self) -> Plain:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def add_task(self, description: str, total: float | None = None, **fields: Any) -> int:
        return 0

    def advance(self, task: int, n: float) -> None:
        return None

    def update(self, task: int, **kw: Any) -> None:
        return None

    def remove_task(self, task: int) -> None:
        return None

    def stop(self) -> None:
        return None

    def print(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)


class Bars:
    """rich progress bars: per item and overall, with speed and ETA. ``extra`` adds
    columns by template, e.g. ``"{task.fields[conns]} conn"``."""

    def __init__(self, *extra: str) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self.console = Console(stderr=True, highlight=False)
        self.progress = Progress(
            TextColumn("{task.description}", style="bold", markup=False), BarColumn(),
            DownloadColumn(binary_units=True), TransferSpeedColumn(), TimeRemainingColumn(),
            *(TextColumn(e, markup=False) for e in extra), console=self.console)

    def __enter__(self) -> Bars:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)

    def add_task(self, description: str, total: float | None = None, **fields: Any) -> int:
        return int(self.progress.add_task(description, total=total, **fields))

    def advance(self, task: int, n: float) -> None:
        self.progress.advance(task, n)  # type: ignore[arg-type]

    def update(self, task: int, **kw: Any) -> None:
        self.progress.update(task, **kw)  # type: ignore[arg-type]

    def remove_task(self, task: int) -> None:
        self.progress.remove_task(task)  # type: ignore[arg-type]

    def stop(self) -> None:
        self.progress.stop()

    def print(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False)


Display = Plain | Bars


def screen(*extra: str, quiet: bool = False) -> Display:
    """Bars on a terminal (or with ATELIER_PROGRESS=1), plain lines otherwise."""
    if not quiet and (os.environ.get("ATELIER_PROGRESS") or sys.stderr.isatty()):
        return Bars(*extra)
    return Plain()


def human(n: float) -> str:
    """Bytes as ``12.3 MiB``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return str(n)


_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def parse_size(text: str) -> int:
    """``1M``, ``512k``, ``4MiB``, ``1.5G``, ``1048576`` -> bytes (an argparse ``type``;
    rates such as ``--limit-rate 20M`` read the same way, per second)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*", text.lower())
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 512K, 20M, 1G)")
    return int(float(m.group(1)) * _UNITS[m.group(2)])
