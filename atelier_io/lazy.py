"""Package names that load on first use (PEP 562).

A package's ``__init__`` hands its public names on without importing the modules that
define them, so a desktop command that needs one small piece does not pay for a web
stack, a database layer or torch::

    __getattr__, __dir__ = lazy.exports(__name__, {"fetch": "engine", ...})
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def exports(package: str, where: Mapping[str, str]
            ) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``: name -> module (relative to it)."""

    def getattr_(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f".{module}", package), name)
        setattr(sys.modules[package], name, value)  # later look-ups skip this function
        return value

    def dir_() -> list[str]:
        return sorted(where)

    return getattr_, dir_
