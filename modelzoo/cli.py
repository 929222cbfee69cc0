"""ModelZoo's subcommands for the ``atelier`` command line."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    try:
        from .fetch.cli import register as register_fetch
    except ImportError:  # the fetch engine is not there yet
        return
    register_fetch(sub)
