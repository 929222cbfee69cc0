"""Every generator's layout, read from files written the way that generator writes them
(generators.py), through ``read_meta`` as the index and the info route read them."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from filebrowser.images.formats import _detect, detect_text, parse_comfyui
from filebrowser.images.formats.fooocus import from_fields, parse_log
from filebrowser.images.meta import read_meta

from . import generators as gen
from .conftest import A1111_TEXT, COMFY_PROMPT, COMFY_WORKFLOW


def _loras(g: object) -> list[tuple[str, float | None]]:
    return [(lo.name, lo.weight) for lo in g.loras]  # type: ignore[attr-defined]


# -- A1111 and Forge -------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP"])
def test_a1111_exif_written_by_piexif(tmp_path: Path, fmt: str) -> None:
    m = read_meta(gen.a1111_exif(tmp_path / f"a.{fmt.lower()}", A1111_TEXT, fmt))
    assert (m.params_from, m.params.source) == ("exif:UserComment", "a1111")
    assert m.params.seed == 3141592653 and m.params.model == "anything-v5"
    assert m.params.raw == A1111_TEXT


def test_forge_is_told_from_a1111_by_its_version(tmp_path: Path) -> None:
    text = A1111_TEXT.replace("Version: v1.10.1", "Version: f2.0.1v1.10.1-previous-313-g8a04")
    assert read_meta(gen.a1111_png(tmp_path / "f.png", text)).params.source == "forge"
    assert read_meta(gen.a1111_png(tmp_path / "a.png", A1111_TEXT)).params.source == "a1111"


# -- NovelAI ----------------------------------------------------------------------------


def test_novelai_v4(tmp_path: Path) -> None:
    m = read_meta(gen.novelai_png(tmp_path / "n.png"))
    g = m.params
    assert (m.params_from, g.source) == ("png:Comment", "novelai")
    # the base caption, then each character's caption: all searchable as the prompt
    assert g.prompt.split("\n") == ["2girls, cafe interior, warm lighting, very aesthetic",
                                    "girl, red hair, green eyes, holding cup",
                                    "girl, black hair, glasses, reading book"]
    assert g.negative_prompt.split("\n") == ["blurry, lowres, error, worst quality",
                                             "extra fingers"]
    assert (g.steps, g.cfg_scale, g.seed) == (23, 6.0, 3543678127)
    assert (g.sampler, g.scheduler) == ("DPM++ 2M", "Karras")  # A1111's names
    assert (g.width, g.height) == (1216, 832)
    assert (g.model, g.model_hash) == ("NovelAI Diffusion V4.5", "4BDE2A90")
    assert g.extra["CFG rescale"] == "0.2" and g.extra["Characters"] == "2"
    assert "Comment" not in m.to_json()["texts"]  # not repeated beside params.raw


def test_novelai_v3(tmp_path: Path) -> None:
    g = read_meta(gen.novelai_png(tmp_path / "n.png", gen.NAI_V3_COMMENT,
                                  "Stable Diffusion XL C1E1DE52")).params
    assert g.source == "novelai"
    assert g.prompt == gen.NAI_V3_COMMENT["prompt"]
    assert g.negative_prompt == gen.NAI_V3_COMMENT["uc"]  # "uc" is the negative
    assert (g.steps, g.cfg_scale, g.seed, g.sampler) == (28, 5.0, 1234567890, "Euler a")
    assert (g.width, g.height, g.model, g.model_hash) == (832, 1216, "Stable Diffusion XL",
                                                          "C1E1DE52")
    assert g.extra["SMEA"] == "on"


def test_novelai_without_comment_keeps_the_description(tmp_path: Path) -> None:
    p = gen.png_with_texts(tmp_path / "n.png", [("Description", "a quiet lake"),
                                                ("Software", "NovelAI"),
                                                ("Comment", "not json")])
    g = read_meta(p).params
    assert (g.source, g.prompt, g.steps) == ("novelai", "a quiet lake", None)


# -- InvokeAI ---------------------------------------------------------------------------


def test_invokeai_4(tmp_path: Path) -> None:
    m = read_meta(gen.invokeai_png(tmp_path / "i.png"))
    g = m.params
    assert (m.params_from, g.source) == ("png:invokeai_metadata", "invokeai")
    assert (g.prompt, g.negative_prompt) == ("an astronaut riding a horse, 35mm", "cartoon")
    assert (g.seed, g.steps, g.cfg_scale, g.sampler) == (3141, 25, 6.0, "dpmpp_2m_k")
    assert (g.model, g.model_hash) == ("Juggernaut XL v9", "blake3:9c1ff3f2a1b0e7")
    assert _loras(g) == [("pixel-art-xl", 0.6)] and g.vae == "sdxl-vae-fp16-fix"
    assert (g.width, g.height, g.version) == (1024, 1024, "4.2.9")
    assert g.extra["Style prompt"] == "cinematic"


def test_invokeai_3(tmp_path: Path) -> None:
    g = read_meta(gen.invokeai_png(tmp_path / "i.png", gen.INVOKE3_META)).params
    assert (g.source, g.model, g.seed, g.steps) == ("invokeai", "stable-diffusion-v1-5",
                                                    98765, 30)
    assert _loras(g) == [("add_detail", 0.75)] and g.version == "3.6.0"
    assert g.negative_prompt == "lowres, jpeg artifacts"


def test_invokeai_graph_only(tmp_path: Path) -> None:
    m = read_meta(gen.invokeai_png(tmp_path / "i.png", None, gen.INVOKE3_GRAPH,
                                   workflow=False))
    g = m.params
    assert (m.params_from, g.source) == ("png:invokeai_graph", "invokeai")
    assert (g.prompt, g.negative_prompt) == ("a watercolor fox in autumn leaves", "photo, 3d")
    assert (g.seed, g.steps, g.cfg_scale, g.sampler) == (5150, 35, 8.0, "dpmpp_2m")
    assert (g.width, g.height, g.model) == (640, 512, "dreamshaper-8")
    assert _loras(g) == [("add_detail", 0.5)]


def test_invokeai_graph_with_core_metadata_node(tmp_path: Path) -> None:
    graph = copy.deepcopy(gen.INVOKE3_GRAPH)
    graph["nodes"]["core_metadata"] = {"id": "core_metadata", "type": "core_metadata",
                                       **gen.INVOKE4_META}
    g = read_meta(gen.invokeai_png(tmp_path / "i.png", None, graph)).params
    assert g.prompt == "an astronaut riding a horse, 35mm" and g.seed == 3141


def test_invokeai_2(tmp_path: Path) -> None:
    m = read_meta(gen.invokeai2_png(tmp_path / "i.png"))
    g = m.params
    assert (m.params_from, g.source) == ("png:sd-metadata", "invokeai")
    # 2.x: the [bracketed] part of the prompt is the negative
    assert (g.prompt, g.negative_prompt) == ("a castle on a cliff", "fog, blurry")
    assert (g.steps, g.seed, g.cfg_scale, g.sampler) == (50, 2718281, 7.5, "k_lms")
    assert g.model == "stable-diffusion-1.5" and g.version == "2.3.5"
    dream_only = gen.png_with_texts(tmp_path / "d.png", [
        ("Dream", '"a red barn [people]" -s 30 -S 42 -W 640 -H 448 -C 8.5 -A k_euler_a')])
    d = read_meta(dream_only)
    assert d.params_from == "png:Dream"
    assert (d.params.prompt, d.params.negative_prompt, d.params.seed) == ("a red barn",
                                                                          "people", 42)
    assert (d.params.width, d.params.height, d.params.cfg_scale) == (640, 448, 8.5)


# -- SwarmUI ----------------------------------------------------------------------------


def _check_swarm(g: object) -> None:
    assert g.source == "swarmui"  # type: ignore[attr-defined]
    assert g.prompt.startswith("a glass teapot")  # type: ignore[attr-defined]
    assert g.negative_prompt == "blurry, watermark"  # type: ignore[attr-defined]
    assert (g.model, g.seed, g.steps, g.cfg_scale) == (  # type: ignore[attr-defined]
        "sd_xl_base_1.0", 1618033, 24, 6.5)
    assert (g.sampler, g.scheduler, g.width, g.height) == (  # type: ignore[attr-defined]
        "dpmpp_2m", "karras", 1152, 896)
    assert _loras(g) == [("film_grain", 0.8), ("detail", 0.5), ("teapot_style", 0.6)]
    assert g.model_hash == "0x" + "d7a9105a" * 8  # type: ignore[attr-defined]
    assert g.extra["refinercontrolpercentage"] == "0.2"  # type: ignore[attr-defined]
    assert g.version == "SwarmUI 0.9.6.2"  # type: ignore[attr-defined]


def test_swarmui_png(tmp_path: Path) -> None:
    m = read_meta(gen.swarm_png(tmp_path / "s.png"))  # > 1 KiB: zTXt, as ImageSharp does
    assert m.params_from == "png:parameters"
    _check_swarm(m.params)
    short = {"sui_image_params": {"prompt": "a cat", "seed": 5, "model": "x/y"}}
    assert read_meta(gen.swarm_png(tmp_path / "t.png", short)).params.model == "y"
    cjk = copy.deepcopy(gen.SWARM_DOC)
    cjk["sui_image_params"]["prompt"] = "一只玻璃茶壶"  # not latin-1: iTXt
    assert read_meta(gen.swarm_png(tmp_path / "u.png", cjk)).params.prompt == "一只玻璃茶壶"


def test_swarmui_jpeg_utf16le_user_comment(tmp_path: Path) -> None:
    p = gen.swarm_jpeg(tmp_path / "s.jpg")
    raw = Image.open(p).info["exif"]
    assert raw[6:8] == b"II" and b"U\0N\0" not in raw  # little-endian TIFF, LE text
    m = read_meta(p)
    assert m.params_from == "exif:UserComment"
    _check_swarm(m.params)
    cjk = copy.deepcopy(gen.SWARM_DOC)
    cjk["sui_image_params"]["prompt"] = "夜の東京、ネオン"  # no NUL bytes to tell the order
    assert read_meta(gen.swarm_jpeg(tmp_path / "c.jpg", cjk)).params.prompt == "夜の東京、ネオン"


# -- Fooocus -----------------------------------------------------------------------------


def _check_fooocus(g: object, *, loras_weight: float | None = 0.1) -> None:
    assert g.source == "fooocus"  # type: ignore[attr-defined]
    assert (g.steps, g.cfg_scale, g.seed) == (30, 4.0, 6617028264713)  # type: ignore
    assert (g.width, g.height) == (1152, 896)  # type: ignore[attr-defined]
    assert g.model == "juggernautXL_v8Rundiffusion"  # type: ignore[attr-defined]
    assert _loras(g) == [("sd_xl_offset_example-lora_1.0", loras_weight)]


def test_fooocus_json_scheme(tmp_path: Path) -> None:
    g = read_meta(gen.fooocus_png(tmp_path / "f.png", "fooocus")).params
    _check_fooocus(g)
    assert (g.prompt, g.negative_prompt) == ("a cat astronaut floating in space",
                                             "unrealistic, saturated")
    assert (g.sampler, g.scheduler, g.version) == ("dpmpp_2m_sde_gpu", "karras",
                                                   "Fooocus v2.5.5")
    assert g.extra["Prompt expansion"].endswith("cinematic")
    assert g.vae is None  # "Default (model)"


def test_fooocus_a1111_scheme(tmp_path: Path) -> None:
    g = read_meta(gen.fooocus_png(tmp_path / "f.png", "a1111")).params
    _check_fooocus(g)  # weights from "Lora weights", names from "Lora hashes"
    assert g.prompt.startswith("a cat astronaut floating in space, intricate")
    assert g.extra["Raw prompt"] == "a cat astronaut floating in space"


@pytest.mark.parametrize(("scheme", "fmt"), [("fooocus", "JPEG"), ("a1111", "WEBP")])
def test_fooocus_exif_in_ifd0(tmp_path: Path, scheme: str, fmt: str) -> None:
    m = read_meta(gen.fooocus_exif(tmp_path / f"f.{fmt.lower()}", scheme, fmt))
    assert m.texts["MakerNote"] == scheme and m.texts["Software"] == "Fooocus v2.5.5"
    _check_fooocus(m.params)


@pytest.mark.parametrize("layout", ["2.5", "2.1.854", "2.1.7"])
def test_fooocus_log_html(tmp_path: Path, layout: str) -> None:
    folder = tmp_path / "2024-05-01"
    other = [(lab, key, "a different picture" if key == "prompt" else v)
             for lab, key, v in gen.FOOOCUS_FIELDS]
    gen.fooocus_log(folder, [("2024-05-01_10-00-00_1.png", gen.FOOOCUS_FIELDS),
                             ("2024-05-01_10-01-00_2.png", other)], layout)
    for name in ("2024-05-01_10-00-00_1.png", "2024-05-01_10-01-00_2.png", "3.png"):
        Image.new("RGB", (8, 8)).save(folder / name)  # Fooocus' default: no metadata
    m = read_meta(folder / "2024-05-01_10-00-00_1.png")
    assert m.params_from == "fooocus:log.html"
    _check_fooocus(m.params)
    assert m.params.prompt == "a cat astronaut floating in space"
    assert read_meta(folder / "2024-05-01_10-01-00_2.png").params.prompt == "a different picture"
    assert read_meta(folder / "3.png").params_from is None  # not in the log
    assert read_meta(folder / "3.png", log=False).params.source == "none"


@pytest.mark.parametrize("layout", ["2.5", "2.1.854"])
def test_fooocus_log_multiline_prompt_and_html_in_values(tmp_path: Path, layout: str) -> None:
    fields = [(lab, key, "line one\nline two, <lora:x:0.5>" if key == "prompt" else v)
              for lab, key, v in gen.FOOOCUS_FIELDS]
    entry = parse_log(gen.fooocus_log(tmp_path, [("a.png", fields)], layout).read_text())["a.png"]
    assert entry["Prompt"] == "line one\nline two, <lora:x:0.5>"


# -- ComfyUI ------------------------------------------------------------------------------


def test_comfyui_names_lose_folder_and_extension() -> None:
    g = parse_comfyui(json.dumps(COMFY_PROMPT), json.dumps(COMFY_WORKFLOW))
    assert g.model == "v1-5-pruned-emaonly" and _loras(g) == [("glassy", 0.75)]


def test_comfyui_flux_default_graph(tmp_path: Path) -> None:
    m = read_meta(gen.comfy_png(tmp_path / "f.png", gen.FLUX_PROMPT, gen.FLUX_WORKFLOW))
    g = m.params
    assert (m.params_from, g.source) == ("png:prompt", "comfyui")
    # SamplerCustomAdvanced -> BasicGuider -> FluxGuidance -> CLIPTextEncode
    assert g.prompt == "a red fox reading a newspaper in a cozy cabin, photo"
    assert g.negative_prompt == "" and g.extra["Guidance"] == "3.5"
    assert g.seed == 219670278747233  # RandomNoise
    assert (g.steps, g.scheduler) == (20, "simple")  # BasicScheduler
    assert g.sampler == "euler"  # KSamplerSelect
    assert (g.width, g.height) == (1024, 768)
    assert g.model == "flux1-dev"  # UNETLoader "flux/flux1-dev.safetensors"
    assert _loras(g) == [("realism_lora", 0.8)]  # "flux\\realism_lora.safetensors"
    assert g.vae == "ae.safetensors"


def test_comfyui_flux_cfg_guider() -> None:
    p = copy.deepcopy(gen.FLUX_PROMPT)
    p["22"] = {"class_type": "CFGGuider", "inputs": {
        "model": ["30", 0], "positive": ["26", 0], "negative": ["40", 0], "cfg": 3.0}}
    p["40"] = {"class_type": "CLIPTextEncode", "inputs": {"text": "cartoon",
                                                          "clip": ["11", 0]}}
    g = parse_comfyui(p)
    assert (g.cfg_scale, g.negative_prompt) == (3.0, "cartoon")
    assert g.prompt.startswith("a red fox")


def test_comfyui_flux_workflow_only(tmp_path: Path) -> None:
    m = read_meta(gen.comfy_png(tmp_path / "f.png", None, gen.FLUX_WORKFLOW))
    g = m.params
    assert (m.params_from, g.source) == ("png:workflow", "comfyui")
    assert (g.seed, g.steps, g.sampler, g.scheduler) == (219670278747233, 20, "euler",
                                                         "simple")
    assert g.prompt.startswith("a red fox") and g.model == "flux1-dev"
    assert _loras(g) == [("realism_lora", 0.8)] and (g.width, g.height) == (1024, 768)


def test_comfyui_ksampler_advanced_workflow_only(tmp_path: Path) -> None:
    g = read_meta(gen.comfy_png(tmp_path / "k.png", None, gen.KSA_WORKFLOW)).params
    assert (g.seed, g.steps, g.cfg_scale, g.sampler, g.scheduler) == (
        424242, 30, 6.5, "dpmpp_2m_sde", "karras")
    assert (g.prompt, g.negative_prompt) == ("portrait of an old sailor, dramatic light",
                                             "cartoon, blurry")
    assert g.model == "juggernautXL_v9"  # "SDXL\\juggernautXL_v9.safetensors"
    assert _loras(g) == [("detail_tweaker", 0.7)] and (g.width, g.height) == (832, 1216)


@pytest.mark.parametrize("widget_inputs", [True, False])
def test_comfyui_custom_sampler_workflow_only(tmp_path: Path, widget_inputs: bool) -> None:
    wf = gen.custom_sampler_workflow(widget_inputs)
    g = read_meta(gen.comfy_png(tmp_path / "c.png", None, wf)).params
    assert (g.seed, g.steps, g.cfg_scale, g.sampler, g.scheduler) == (
        777, 25, 7.5, "euler_ancestral", "normal")
    assert g.prompt == "a lighthouse in a storm, oil painting"
    assert g.embeddings == ["EasyNegative"]  # "embedding:EasyNegative" in the negative
    assert g.model == "dreamshaper_8"


def test_comfyui_muted_nodes_are_not_read() -> None:
    wf = copy.deepcopy(gen.KSA_WORKFLOW)
    wf["nodes"][4]["mode"] = 4  # the LoRA bypassed
    assert _loras(parse_comfyui(None, wf)) == []


# -- stealth -----------------------------------------------------------------------------


@pytest.mark.parametrize(("mode", "compressed"), [("alpha", True), ("alpha", False),
                                                  ("rgb", True), ("rgb", False)])
def test_stealth_pnginfo(tmp_path: Path, mode: str, compressed: bool) -> None:
    size = (96, 96) if compressed else (200, 200)
    p = gen.stealth_png(tmp_path / "s.png", A1111_TEXT, mode, compressed, size)
    assert read_meta(p).params.source == "none"  # off unless asked: it decodes pixels
    m = read_meta(p, stealth=True)
    assert (m.params_from, m.params.source) == ("stealth", "a1111")
    assert m.params.raw == A1111_TEXT and m.params.seed == 3141592653


def test_stealth_novelai_json_in_alpha(tmp_path: Path) -> None:
    doc = {"Title": "NovelAI generated image", "Software": "NovelAI",
           "Source": "NovelAI Diffusion V4.5 4BDE2A90", "Description": "x",
           "Comment": json.dumps(gen.NAI_V4_COMMENT)}
    p = gen.stealth_png(tmp_path / "n.png", json.dumps(doc), size=(128, 128))
    g = read_meta(p, stealth=True).params
    assert g.source == "novelai" and g.seed == 3543678127


def test_stealth_not_tried_when_the_text_is_there(tmp_path: Path) -> None:
    p = gen.stealth_png(tmp_path / "s.png", A1111_TEXT, keep_text=True)
    assert read_meta(p, stealth=True).params_from == "png:parameters"


def test_stealth_of_ordinary_pixels_is_nothing(tmp_path: Path) -> None:
    for mode in ("RGB", "RGBA", "L", "P"):
        p = tmp_path / f"{mode}.png"
        Image.effect_noise((64, 64), 60).convert(mode).save(p)
        assert read_meta(p, stealth=True).params.source == "none"
    # a signature, then a length past the end of the image: no text, no crash
    sig = "".join(format(b, "08b") for b in b"stealth_pnginfo")
    huge = gen.stealth_bits_png(tmp_path / "t.png", sig + format(10**9, "032b") + "0101",
                                "alpha", (40, 40))
    assert read_meta(huge, stealth=True).params.source == "none"
    gz = "".join(format(b, "08b") for b in b"stealth_pngcomp")
    junk = gen.stealth_bits_png(tmp_path / "j.png", gz + format(64, "032b") + "1" * 64,
                                "alpha", (40, 40))  # "gzip" that is not
    assert read_meta(junk, stealth=True).params.source == "none"


# -- not recognised ----------------------------------------------------------------------


@pytest.mark.parametrize("text", ['{"some_tool": {"prompt": "hello"}, "steps": 3}',
                                  '[1, 2, {"a": "b"}]'])
def test_json_not_recognised_is_never_prompt_text(tmp_path: Path, text: str) -> None:
    g = read_meta(gen.a1111_png(tmp_path / "u.png", text)).params
    assert (g.source, g.prompt, g.negative_prompt) == ("unknown", "", "")
    assert g.raw == text  # kept for the viewer, not indexed as words
    assert detect_text(text).source == "unknown"


@pytest.mark.timeout(120)
def test_hostile_fooocus_log_costs_linear_time(tmp_path: Path) -> None:
    # unclosed tags by the hundred thousand: lazy regexes took minutes on a tenth of this
    for filler in ("<td class='key'>", "x: <b>", "<img src='", "to_clipboard('", "a" * 16):
        html = '<div id="a_png"><img src=\'a.png\' >' + filler * 200_000
        assert parse_log(html) == {} or list(parse_log(html)) == ["a.png"]
    folder = tmp_path / "d"
    folder.mkdir()
    (folder / "log.html").write_text('<div id="x">' + "<td class='label'>" * 100_000)
    Image.new("RGB", (8, 8)).save(folder / "x.png")
    assert read_meta(folder / "x.png").params.source == "none"


_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                     lambda c: st.lists(c, max_size=4) | st.dictionaries(
                         st.sampled_from(["prompt", "uc", "steps", "seed", "loras", "model",
                                          "caption", "base_caption", "char_captions", "nodes",
                                          "edges", "resolution", "lora_combined_1", "image",
                                          "sui_image_params", "v4_prompt", "version", "x"]),
                         c, max_size=5), max_leaves=30)


@settings(max_examples=1000, deadline=None)
@given(_JSON, st.sampled_from(["Comment", "invokeai_metadata", "invokeai_graph", "sd-metadata",
                               "parameters", "UserComment", "prompt", "workflow"]))
def test_fuzz_every_layout_never_raises(doc: object, key: str) -> None:
    text = json.dumps(doc)
    for texts in ({key: text}, {key: text, "Software": "NovelAI"},
                  {key: text, "fooocus_scheme": "fooocus"},
                  {"parameters": json.dumps({"sui_image_params": doc})}):
        g, _where = _detect(texts, None)  # the parsers themselves, not the guard around
        json.dumps(g.to_json())
    from_fields(doc if isinstance(doc, dict) else {"x": doc})


def test_a_cameras_user_comment_is_not_a_prompt(tmp_path: Path) -> None:
    from .conftest import write_exif_image

    p = write_exif_image(tmp_path / "photo.jpg", "Holiday in Kyoto", encoding="ascii")
    g = read_meta(p).params
    assert (g.source, g.prompt) == ("unknown", "") and g.raw == "Holiday in Kyoto"
    # in a PNG's "parameters" (A1111's own chunk) a bare prompt is still one
    assert read_meta(gen.a1111_png(tmp_path / "p.png", "a cat on a mat")).params.prompt == (
        "a cat on a mat")
