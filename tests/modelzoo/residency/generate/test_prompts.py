"""The A1111 prompt language: attention, BREAK, <lora:...> tags, infotext quoting."""

from __future__ import annotations

import pytest

from modelzoo.residency.generate.infotext import infotext, quote
from modelzoo.residency.generate.prompts import (
    NetworkRef,
    extract_networks,
    parse_attention,
    plain,
)


@pytest.mark.parametrize("text, expected", [  # the examples of the WebUI's docstring
    ("normal text", [("normal text", 1.0)]),
    ("an (important) word", [("an ", 1.0), ("important", 1.1), (" word", 1.0)]),
    ("(unbalanced", [("unbalanced", 1.1)]),
    ("\\(literal\\]", [("(literal]", 1.0)]),
    ("(unnecessary)(parens)", [("unnecessaryparens", 1.1)]),
    ("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
     [("a ", 1.0), ("house", 1.5730000000000004), (" ", 1.1), ("on", 1.0), (" a ", 1.1),
      ("hill", 0.55), (", sun, ", 1.1), ("sky", 1.4641000000000006), (".", 1.1)]),
])
def test_attention_as_the_webui_parses_it(text: str, expected: list[tuple[str, float]]) -> None:
    assert parse_attention(text) == expected


def test_break_stray_closers_and_colons() -> None:
    assert parse_attention("a BREAK b") == [("a", 1.0), ("BREAK", -1.0), ("b", 1.0)]
    assert parse_attention("a) b] c:1.2)") == [("a) b] c:1.2)", 1.0)]
    assert parse_attention("[[x]]") == [("x", 1 / 1.1 / 1.1)]
    assert parse_attention("") == [("", 1.0)]
    assert plain("a (b:1.3) [c] BREAK d") == "a b c d"


def test_lora_tags_are_cut_out_with_their_weights() -> None:
    text, refs = extract_networks("a <lora:ink:0.6> cat <LORA:sub/pen> <lyco:x:0.2:0.9> "
                                  "<lora:y:unet=0.3:te=0.1>")
    assert text == "a  cat   "
    assert refs == [NetworkRef("lora", "ink", 0.6, 0.6), NetworkRef("lora", "sub/pen", 1, 1),
                    NetworkRef("lora", "x", 0.2, 0.9), NetworkRef("lora", "y", 0.1, 0.3)]
    assert refs[0].tag == "<lora:ink:0.6>" and refs[2].tag == "<lora:x:0.2:0.9>"
    with pytest.raises(ValueError, match="not a number"):
        extract_networks("<lora:a:heavy>")


def test_infotext_quotes_values_with_commas_colons_and_newlines() -> None:
    assert quote("DPM++ 2M") == "DPM++ 2M" and quote('a: 1, b: 2') == '"a: 1, b: 2"'
    text = infotext("a cat", "blurry", [("Steps", 20), ("CFG scale", 7.0), ("Seed", 1),
                                        ("Model hash", None),
                                        ("Lora hashes", "ink: abc, pen: def")])
    assert text == ('a cat\nNegative prompt: blurry\nSteps: 20, CFG scale: 7, Seed: 1, '
                    'Lora hashes: "ink: abc, pen: def"')
    assert infotext("a", "", [("Steps", 1)]) == "a\nSteps: 1"
