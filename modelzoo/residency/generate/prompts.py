"""The A1111 prompt language, parsed (pure functions; the tensors are in conditioning.py).

Extra networks. ``<lora:name:weight>`` (also ``<lyco:...>``, and A1111's two-weight form
``<lora:name:te:unet>`` or named ``te=``/``unet=``) are cut out of the prompt before
encoding and returned as :class:`NetworkRef`; a missing weight is 1.

Attention, as the WebUI reads it ("Original" emphasis)::

    (word)        weight x 1.1        ((word)) x 1.21, and so on
    [word]        weight / 1.1
    (word:1.3)    weight x 1.3        an explicit number replaces the 1.1 of that bracket
    \\( \\) \\[ \\]   literal brackets
    BREAK         ends the current 75-token chunk (conditioning.py)

Brackets left open at the end still apply to what follows them, a ``)`` or ``]`` without
its opener is text, and neighbouring pieces of equal weight are merged, so the output
matches the WebUI's ``parse_prompt_attention`` on the examples in its docstring (tests).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

BREAK = "BREAK"
_NETWORK = re.compile(r"<(lora|lyco):([^>]+)>", re.IGNORECASE)
_TOKEN = re.compile(r"""
    \\[()\[\]\\]                      # an escaped bracket or backslash
  | \\                                # a lone backslash
  | [(\[]                             # openers
  | :\s*(?P<weight>[+-]?[.\d]+)\s*\)  # ":1.3)" closes a round bracket with a weight
  | [)\]]                             # closers
  | [^\\()\[\]:]+                     # plain text
  | :                                 # a colon that is not a weight
""", re.VERBOSE)
_BREAK = re.compile(r"\s*\bBREAK\b\s*", re.DOTALL)


@dataclass(frozen=True)
class NetworkRef:
    kind: str  # "lora"
    name: str
    te: float = 1.0
    unet: float = 1.0

    @property
    def tag(self) -> str:
        w = f"{self.unet:g}" if self.te == self.unet else f"{self.te:g}:{self.unet:g}"
        return f"<lora:{self.name}:{w}>"


def _number(text: str, tag: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{tag}: {text!r} is not a number") from None


def extract_networks(prompt: str) -> tuple[str, list[NetworkRef]]:
    """Remove ``<lora:...>`` tags; return the rest of the prompt and the networks asked."""
    refs: list[NetworkRef] = []

    def take(m: re.Match[str]) -> str:
        parts = [p.strip() for p in m.group(2).split(":")]
        name, positional, named = parts[0], [], {}
        for p in parts[1:]:
            if "=" in p:
                k, _, v = p.partition("=")
                named[k.strip().lower()] = v.strip()
            elif p:
                positional.append(p)
        te = _number(positional[0], m.group(0)) if positional else 1.0
        unet = _number(positional[1], m.group(0)) if len(positional) > 1 else te
        te = _number(named["te"], m.group(0)) if "te" in named else te
        unet = _number(named["unet"], m.group(0)) if "unet" in named else unet
        if name:
            refs.append(NetworkRef("lora", name, te, unet))
        return ""

    return _NETWORK.sub(take, prompt), refs


def parse_attention(text: str) -> list[tuple[str, float]]:
    """``"a (b:1.5) [c]"`` -> ``[("a ", 1.0), ("b", 1.5), (" ", 1.0), ("c", 0.909...)]``;
    ``BREAK`` comes back as ``("BREAK", -1.0)``."""
    pieces: list[list[object]] = []  # [text, weight]
    rounds: list[int] = []  # index in pieces where an open "(" starts
    squares: list[int] = []

    def scale(start: int, factor: float) -> None:
        for p in pieces[start:]:
            p[1] = float(p[1]) * factor  # type: ignore[arg-type]

    for m in _TOKEN.finditer(text):
        tok, weight = m.group(0), m.group("weight")
        if tok.startswith("\\") and len(tok) == 2:
            pieces.append([tok[1], 1.0])
        elif tok == "(":
            rounds.append(len(pieces))
        elif tok == "[":
            squares.append(len(pieces))
        elif weight is not None and rounds:
            try:
                scale(rounds.pop(), float(weight))
            except ValueError:  # "1.2.3": not a number after all, keep it as text
                pieces.append([tok, 1.0])
        elif tok == ")" and rounds:
            scale(rounds.pop(), 1.1)
        elif tok == "]" and squares:
            scale(squares.pop(), 1 / 1.1)
        else:
            for i, part in enumerate(_BREAK.split(tok)):
                if i:
                    pieces.append([BREAK, -1.0])
                pieces.append([part, 1.0])
    for start in rounds:
        scale(start, 1.1)
    for start in squares:
        scale(start, 1 / 1.1)
    merged: list[tuple[str, float]] = []
    for t, w in pieces:
        t, w = str(t), float(w)  # type: ignore[arg-type]
        if merged and merged[-1][1] == w and t != BREAK and merged[-1][0] != BREAK:
            merged[-1] = (merged[-1][0] + t, w)
        else:
            merged.append((t, w))
    return merged or [("", 1.0)]


def plain(text: str) -> str:
    """The prompt without weights or brackets, for pipelines that take text (Flux, SD3)."""
    return "".join(t if t != BREAK else " " for t, w in parse_attention(text)).strip()
