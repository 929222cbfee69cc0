"""Prompt encoding: the WebUI's chunks of 75, weights, clip skip; equal to diffusers' own
encoding where both apply."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from modelzoo.residency.generate.conditioning import (
    CHUNK,
    PromptEncoder,
    Vocab,
    chunk_tokens,
)

V = Vocab(bos=1, eos=2, pad=2, comma=9, groups={50: 3})


def test_chunks_of_75_with_start_end_and_padding() -> None:
    chunks = chunk_tokens([(list(range(100, 180)), 1.0)], V)  # 80 tokens
    assert [len(c.tokens) for c in chunks] == [77, 77]
    assert chunks[0].tokens[0] == 1 and chunks[0].tokens[-1] == 2
    assert chunks[0].tokens[1:76] == list(range(100, 175))
    assert chunks[1].tokens[1:6] == list(range(175, 180)) and chunks[1].tokens[6:] == [2] * 71
    assert chunks[1].weights == [1.0] * 77


def test_break_commas_weights_and_embeddings() -> None:
    brk = chunk_tokens([([10, 11], 1.2), ([-1], -1.0), ([12], 1.0)], V)
    assert len(brk) == 2 and brk[0].tokens[1:3] == [10, 11] and brk[0].weights[1:3] == [1.2, 1.2]
    assert brk[1].tokens[1] == 12
    # a comma 10 tokens before the end of a full chunk: the rest moves to the next chunk
    toks = [100] * 65 + [9] + [101] * 20
    commas = chunk_tokens([(toks, 1.0)], V)
    assert commas[0].tokens[1:67] == toks[:66] and commas[0].tokens[67:] == [2] * 10
    assert commas[1].tokens[1:21] == [101] * 20
    # a 3-vector embedding at the chunk's end is not split
    emb = chunk_tokens([([100] * 74 + [50, 51, 52], 1.0)], V)
    assert emb[0].tokens[75] == 2 and emb[1].tokens[1:4] == [50, 51, 52]
    # OpenCLIP pads with its own id after the first end token
    oc = chunk_tokens([([5], 1.0)], Vocab(1, 2, 0, None, {}))
    assert oc[0].tokens[:4] == [1, 5, 2, 0] and oc[0].tokens[-1] == 0


@pytest.fixture(scope="module")
def sd_pipe(tiny_models: SimpleNamespace):  # type: ignore[no-untyped-def]
    import diffusers

    return diffusers.StableDiffusionPipeline.from_pretrained(tiny_models.folder,
                                                             local_files_only=True)


def test_short_prompts_encode_exactly_as_diffusers(sd_pipe) -> None:  # type: ignore[no-untyped-def]
    ours = PromptEncoder(sd_pipe, "sd")("lowest newer", "wider")
    pe, ne = sd_pipe.encode_prompt("lowest newer", "cpu", 1, True, "wider")
    assert torch.equal(ours["prompt_embeds"], pe) and torch.equal(ours["negative_prompt_embeds"],
                                                                  ne)
    # WebUI clip skip 2 = the penultimate layer, after the final layer norm
    ours2 = PromptEncoder(sd_pipe, "sd", clip_skip=2)("lowest newer", "")
    ids = sd_pipe.tokenizer("lowest newer", padding="max_length", max_length=77,
                            return_tensors="pt").input_ids
    te = sd_pipe.text_encoder
    hidden = te(ids, output_hidden_states=True).hidden_states[-2]
    want = getattr(te, "text_model", te).final_layer_norm(hidden)
    assert torch.allclose(ours2["prompt_embeds"], want, atol=1e-6)
    assert not torch.allclose(ours2["prompt_embeds"], pe, atol=1e-3)


def test_long_prompts_and_weights(sd_pipe) -> None:  # type: ignore[no-untyped-def]
    enc = PromptEncoder(sd_pipe, "sd")
    long = " ".join(["lowest newer"] * 20)
    n = len(sd_pipe.tokenizer(long, add_special_tokens=False).input_ids)
    assert 150 < n <= 225  # the tiny vocabulary spells most words out: three chunks
    out = enc(long, "wider")
    assert out["prompt_embeds"].shape == (1, 3 * (CHUNK + 2), 32)
    assert out["negative_prompt_embeds"].shape == out["prompt_embeds"].shape
    base = enc("lowest newer", "")["prompt_embeds"]
    heavy = enc("(lowest:1.5) newer", "")["prompt_embeds"]
    assert not torch.equal(base, heavy)
    assert torch.equal(base, enc("(lowest:1) newer", "")["prompt_embeds"])


def test_sdxl_matches_diffusers_for_short_prompts(tiny_models: SimpleNamespace) -> None:
    import diffusers

    pipe = diffusers.StableDiffusionXLPipeline.from_pretrained(tiny_models.pipes["sdxl"],
                                                               local_files_only=True)
    ours = PromptEncoder(pipe, "sdxl")("lowest newer", "wider")
    pe, ne, pp, npool = pipe.encode_prompt("lowest newer", device="cpu",
                                           negative_prompt="wider")
    assert torch.allclose(ours["prompt_embeds"], pe, atol=1e-6)
    assert torch.allclose(ours["negative_prompt_embeds"], ne, atol=1e-6)
    assert torch.allclose(ours["pooled_prompt_embeds"], pp, atol=1e-6)
    assert torch.allclose(ours["negative_pooled_prompt_embeds"], npool, atol=1e-6)
    empty = PromptEncoder(pipe, "sdxl")("lowest", "")
    assert not empty["negative_prompt_embeds"].any()  # force_zeros_for_empty_prompt
