"""The runner on its own: step counting, cancel between steps, the flow-matching path."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from modelzoo.residency.families import FAMILIES, detect_folder
from modelzoo.residency.generate import samplers
from modelzoo.residency.generate.request import GenerationRequest, Hires
from modelzoo.residency.generate.runner import Cancelled, Control, Runner


def _req(**kw: Any) -> GenerationRequest:
    base: dict[str, Any] = {"kind": "txt2img", "model": "m", "prompt": "lowest newer",
                            "negative_prompt": "wider", "steps": 4, "cfg_scale": 7.0,
                            "width": 64, "height": 64,
                            "sampler": samplers.resolve("Euler a"), "seed": 5}
    base.update(kw)
    return GenerationRequest(**base)


@pytest.fixture(scope="module")
def sd(tiny_models: SimpleNamespace) -> Any:
    import diffusers

    pipe = diffusers.StableDiffusionPipeline.from_pretrained(tiny_models.folder,
                                                             local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    pipe.atelier_family = detect_folder(Path(tiny_models.folder))
    pipe.atelier_scheduler_config = dict(pipe.scheduler.config)
    return pipe


def _run(pipe: Any, req: GenerationRequest, ctl: Control | None = None) -> Any:
    return Runner(pipe, req, ctl or Control(), model_name="m", model_hash=None,
                  version="t").run()


def test_steps_are_counted_over_passes_and_phases(sd: Any) -> None:
    seen: list[tuple[int, int]] = []
    ctl = Control(lambda step, total, preview: seen.append((step, total)))
    heun = samplers.resolve("Heun")  # two model calls per step: diffusers doubles timesteps
    hires = Hires(128, 128, "Latent", 2, 0.5, heun, "", "", 2.0)
    res = _run(sd, _req(n_iter=2, sampler=heun, hires=hires), ctl)
    assert len(res.outputs) == 2 and res.outputs[0].image.size == (128, 128)
    totals = {t for _, t in seen}
    assert len(totals) == 1
    total = totals.pop()
    assert [s for s, _ in seen] == list(range(1, total + 1)) and not res.interrupted


def test_cancel_raises_between_steps_and_leaves_the_pipeline_clean(sd: Any) -> None:
    ctl = Control()

    def on_progress(step: int, total: int, preview: Any) -> None:
        if step == 2:
            ctl.cancelled = True

    ctl.on_progress = on_progress
    with pytest.raises(Cancelled):
        _run(sd, _req(steps=10), ctl)
    again = _run(sd, _req(steps=10))
    assert len(again.outputs) == 1


def test_flow_matching_models_take_plain_prompts(tmp_path: Path) -> None:
    """SD 3 (no T5 here: the pipeline uses zeros for it) through the flow path."""
    import diffusers
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    from ..checkpoints import _tokenizer

    torch.manual_seed(0)
    tok = _tokenizer(tmp_path / "tok")
    cfg = CLIPTextConfig(bos_token_id=21, eos_token_id=22, hidden_size=32, intermediate_size=37,
                         layer_norm_eps=1e-5, num_attention_heads=4, num_hidden_layers=2,
                         pad_token_id=22, vocab_size=1000, projection_dim=32)
    pipe = diffusers.StableDiffusion3Pipeline(
        transformer=diffusers.SD3Transformer2DModel(
            sample_size=32, patch_size=1, in_channels=4, num_layers=1, attention_head_dim=8,
            num_attention_heads=4, caption_projection_dim=32, joint_attention_dim=32,
            pooled_projection_dim=64, out_channels=4),
        vae=diffusers.AutoencoderKL(sample_size=32, in_channels=3, out_channels=3,
                                    block_out_channels=(4,), layers_per_block=1,
                                    latent_channels=4, norm_num_groups=1, use_quant_conv=False,
                                    use_post_quant_conv=False, shift_factor=0.0609,
                                    scaling_factor=1.5035),
        text_encoder=CLIPTextModelWithProjection(cfg), tokenizer=tok,
        text_encoder_2=CLIPTextModelWithProjection(cfg), tokenizer_2=tok,
        text_encoder_3=None, tokenizer_3=None,
        scheduler=diffusers.FlowMatchEulerDiscreteScheduler())
    pipe.set_progress_bar_config(disable=True)
    pipe.atelier_family = FAMILIES["sd3"]
    pipe.atelier_scheduler_config = dict(pipe.scheduler.config)
    req = _req(prompt="(lowest:1.3) newer BREAK wider", width=32, height=32, steps=3,
               batch_size=2, sampler=samplers.resolve(None, flow=True), cfg_scale=5.0)
    res = _run(pipe, req)
    assert [o.seed for o in res.outputs] == [5, 6] and res.outputs[0].image.size == (32, 32)
    assert "Sampler: Euler," in res.outputs[0].infotext
    assert "Schedule type" not in res.outputs[0].infotext
    with pytest.raises(Exception, match="flow-matching Euler"):
        samplers.resolve("DPM++ 2M", flow=True)
