"""The infotext parser: A1111 format edge cases, ComfyUI graphs, and a fuzz."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from filebrowser.images.formats import parse_comfyui
from filebrowser.images.infotext import _parse, parse_infotext, parse_param_line

from .conftest import A1111_TEXT, CHINESE_TEXT, COMFY_PROMPT, COMFY_WORKFLOW


def test_full_a1111_infotext() -> None:
    g = parse_infotext(A1111_TEXT)
    assert g.source == "a1111"
    assert g.prompt.startswith("masterpiece, best quality, 1girl, red hair")
    assert g.prompt.endswith("<lora:styleX_v2:1.1>")
    assert "\n" in g.prompt  # multi-line prompt kept
    assert g.negative_prompt == "lowres, bad hands, (worst quality:1.4)"
    assert (g.steps, g.sampler, g.scheduler, g.cfg_scale) == (28, "DPM++ 2M", "Karras", 6.5)
    assert g.seed == 3141592653
    assert (g.width, g.height) == (512, 768)
    assert (g.model, g.model_hash) == ("anything-v5", "45dee52b")
    assert g.vae == "vae-ft-mse.safetensors"
    assert g.clip_skip == 2 and g.denoising_strength == 0.45 and g.version == "v1.10.1"
    assert [(lo.name, lo.weight, lo.hash) for lo in g.loras] == [
        ("add_detail", 0.8, "7c6bad76eb54"), ("styleX_v2", 1.1, "0123456789ab")]
    assert g.hires == {"upscale": "2", "steps": "10", "upscaler": "4x-UltraSharp"}
    # a quoted value holding a comma and a colon comes back whole and unquoted
    assert g.adetailer == {"model": "face_yolov8n.pt", "prompt": "smile, closed eyes: 1",
                           "confidence": "0.3"}
    assert g.raw == A1111_TEXT


def test_missing_negative_prompt() -> None:
    g = parse_infotext("a cat on a sofa\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 5")
    assert g.prompt == "a cat on a sofa"
    assert g.negative_prompt == ""
    assert g.steps == 20 and g.seed == 5


def test_multi_line_negative_and_prompt() -> None:
    text = ("line one\nline two\nNegative prompt: bad\nworse\n"
            "Steps: 5, Sampler: Euler a, CFG scale: 3, Seed: 1")
    g = parse_infotext(text)
    assert g.prompt == "line one\nline two"
    assert g.negative_prompt == "bad\nworse"


def test_prompt_only_no_params_line() -> None:
    g = parse_infotext("just a prompt, with: a colon, and commas")
    assert g.prompt == "just a prompt, with: a colon, and commas"
    assert g.steps is None and g.extra == {}


def test_param_line_needs_three_pairs() -> None:
    # two "key: value" pairs are still prompt text (A1111's rule)
    g = parse_infotext("portrait\nstyle: oil, mood: calm")
    assert g.prompt == "portrait\nstyle: oil, mood: calm"


def test_quoted_values_json_escapes() -> None:
    line = ('Steps: 1, Sampler: Euler, CFG scale: 1, Wildcard prompt: "a \\"b\\", c: d\\nnext", '
            'Emoji: "\\u7ea2\\u53d1"')
    p = parse_param_line(line)
    assert p["Wildcard prompt"] == 'a "b", c: d\nnext'
    assert p["Emoji"] == "红发"


def test_unknown_keys_kept() -> None:
    g = parse_infotext("x\nSteps: 1, Sampler: Euler, CFG scale: 1, RNG: CPU, "
                       "TI hashes: \"easyneg: c74b\", Template: a {b|c}")
    assert g.extra == {"RNG": "CPU", "TI hashes": "easyneg: c74b", "Template": "a {b|c}"}
    assert g.embeddings == ["easyneg"]  # the embeddings A1111 lists with their hashes


def test_dynamic_prompts_trailing_lines() -> None:
    text = ("a red {cat|dog}\nNegative prompt: bad\n"
            "Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 9\n"
            "Template: a red {cat|dog}\nNegative Template: bad")
    g = parse_infotext(text)
    assert g.prompt == "a red {cat|dog}" and g.negative_prompt == "bad"
    assert g.steps == 20
    assert g.extra["Template"] == "a red {cat|dog}"
    assert g.extra["Negative Template"] == "bad"


def test_chinese_prompt_and_lora() -> None:
    g = parse_infotext(CHINESE_TEXT)
    assert g.prompt.startswith("杰作, 一个红发女孩")
    assert g.negative_prompt == "低质量, 模糊"
    assert g.model == "国风模型"
    assert [(lo.name, lo.weight) for lo in g.loras] == [("汉服", 0.7)]


def test_lora_variants() -> None:
    g = parse_infotext("<lora:a:0.5> <LORA:b> <lyco:c:1.0:0.5> <lora:d:x> <lora::1>\n"
                       "Steps: 1, Sampler: Euler, CFG scale: 1")
    assert [(lo.name, lo.weight) for lo in g.loras] == [
        ("a", 0.5), ("b", 1.0), ("c", 1.0), ("d", None)]


def test_addnet_loras() -> None:
    g = parse_infotext("x\nSteps: 1, Sampler: Euler, CFG scale: 1, AddNet Enabled: True, "
                       "AddNet Module 1: LoRA, AddNet Model 1: myLora(abcdef12), "
                       "AddNet Weight A 1: 0.6")
    assert [(lo.name, lo.weight, lo.hash) for lo in g.loras] == [("myLora", 0.6, "abcdef12")]


def test_crlf_and_empty() -> None:
    g = parse_infotext("p\r\nNegative prompt: n\r\nSteps: 2, Sampler: Euler, CFG scale: 1")
    assert (g.prompt, g.negative_prompt, g.steps) == ("p", "n", 2)
    assert parse_infotext("").source == "none"
    assert parse_infotext(None).source == "none"
    assert parse_infotext(b"\xff\xfe bytes\nSteps: 1, Sampler: a, CFG scale: 1").steps == 1


def test_bad_numbers_do_not_raise() -> None:
    g = parse_infotext("p\nSteps: many, Sampler: Euler, CFG scale: nan, Seed: 1e400, "
                       "Size: 99999999x1")
    assert g.steps is None and g.cfg_scale is None and g.seed is None and g.width is None


def test_long_line_is_linear() -> None:
    # A quadratic regex would take minutes on this; it must just be prompt text.
    text = "a" * 300_000 + "\n" + "b " * 100_000
    g = parse_infotext(text)
    assert g.prompt.startswith("aaa") and g.steps is None


def test_comfyui_api_graph() -> None:
    g = parse_comfyui(json.dumps(COMFY_PROMPT), json.dumps(COMFY_WORKFLOW))
    assert g.source == "comfyui"
    assert g.prompt.startswith("beautiful scenery nature glass bottle")
    assert g.negative_prompt == "text, watermark"
    assert (g.steps, g.cfg_scale, g.sampler, g.scheduler) == (20, 8.0, "euler", "normal")
    assert g.seed == 156680208700286
    assert g.model == "v1-5-pruned-emaonly"  # as A1111 names models: no extension
    assert [(lo.name, lo.weight) for lo in g.loras] == [("glassy", 0.75)]
    assert (g.width, g.height) == (640, 384)


def test_comfyui_workflow_only() -> None:
    g = parse_comfyui(None, COMFY_WORKFLOW)
    assert g.source == "comfyui"
    assert (g.seed, g.steps, g.cfg_scale, g.sampler, g.scheduler) == (
        99, 25, 5.5, "dpmpp_2m", "karras")
    assert g.prompt == "a castle on a hill" and g.negative_prompt == "blurry"
    assert g.model == "sdxl_base"


def test_comfyui_cycles_and_garbage() -> None:
    cyclic = {"1": {"class_type": "KSampler", "inputs": {"positive": ["2", 0]}},
              "2": {"class_type": "Combine", "inputs": {"conditioning_1": ["2", 0]}}}
    assert parse_comfyui(cyclic).prompt == ""
    for junk in ("not json", "[1,2]", "{\"a\": 1}", "null", b"\xff", 7, {"3": "x"}):
        parse_comfyui(junk, junk)  # must not raise
    assert parse_comfyui(None, None).source == "none"


_LINES = st.sampled_from([
    "Negative prompt: ", "Steps: ", "Sampler: ", ", ", ": ", '"', "\\", "\n", "\r\n",
    "<lora:", ">", ":0.8", "Size: 512x512", "Hires upscale: 2", "ADetailer model: x", "红发",
    "Lora hashes: \"", "AddNet Model 1: ", "(", ")", "x" * 50,
])


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(_LINES, st.text(max_size=30)), max_size=40).map("".join))
def test_fuzz_structured_garbage(text: str) -> None:
    g = _parse(text)  # the parser itself, not the never-raise guard around it
    assert isinstance(g.prompt, str) and isinstance(g.negative_prompt, str)
    assert "\r" not in g.prompt + g.negative_prompt + g.raw
    json.dumps(g.to_json())


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400))
def test_fuzz_any_text(text: str) -> None:
    _parse(text)
    parse_infotext(text)


@settings(max_examples=200, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=6), c,
                                                                       max_size=4),
                    max_leaves=30))
def test_fuzz_comfyui(graph: object) -> None:
    parse_comfyui(graph, graph)
    parse_comfyui(json.dumps(graph), {"nodes": [graph], "links": [graph]})
