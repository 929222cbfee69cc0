"""Prompt -> text-encoder embeddings the WebUI's way: weights, 75-token chunks, clip skip.

CLIP reads 77 tokens (a start token, 75 of text, an end token). Longer prompts are cut
into chunks of 75 that are encoded one by one and concatenated along the sequence, which
the UNet's cross-attention accepts at any length::

    "a castle, (red roof:1.3), ... 140 tokens ... BREAK sky"
      -> parse_attention -> tokenize each piece -> chunks of 75 (+ start/end, padded)
      -> encode each chunk -> multiply each token's vector by its weight, then scale
         the chunk back to its original mean ("Original" emphasis)
      -> concatenate: (1, 77 * n_chunks, dim)

A chunk that would end within 20 tokens after a comma breaks at that comma instead
(the WebUI's ``comma_padding_backtrack``); ``BREAK`` ends a chunk; a textual-inversion
embedding's vectors stay in one chunk. Prompt and negative prompt are padded to the same
number of chunks with encoded empty chunks.

Per architecture: SD 1.x/2.x use the last layer after the final layer norm, or with clip
skip N the N-th layer from the end, normed; SDXL concatenates CLIP-L and OpenCLIP bigG
penultimate layers (no final norm) and takes the pooled, projected bigG output of the
first chunk; an empty SDXL negative prompt is zeros (``force_zeros_for_empty_prompt``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .prompts import BREAK, parse_attention

CHUNK = 75
BACKTRACK = 20


@dataclass
class Chunk:
    tokens: list[int] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class Vocab:
    """What chunking needs to know of a tokenizer."""

    bos: int
    eos: int
    pad: int
    comma: int | None
    groups: dict[int, int]  # first token id of a multi-vector embedding -> its length


def chunk_tokens(pieces: list[tuple[list[int], float]], v: Vocab) -> list[Chunk]:
    """Token ids with weights -> chunks of exactly 77 (start + 75 + end), pure."""
    chunks: list[Chunk] = []
    cur = Chunk()
    last_comma = -1

    def close() -> None:
        nonlocal cur, last_comma
        pad = CHUNK - len(cur.tokens)
        toks = [v.bos, *cur.tokens, *([v.eos] * pad), v.eos]
        weights = [1.0, *cur.weights, *([1.0] * pad), 1.0]
        if v.pad != v.eos:  # OpenCLIP pads after the first end token with its pad id
            end = toks.index(v.eos)
            toks = toks[: end + 1] + [v.pad] * (len(toks) - end - 1)
        chunks.append(Chunk(toks, weights))
        cur = Chunk()
        last_comma = -1

    for ids, weight in pieces:
        if weight == -1.0 and ids == [-1]:  # BREAK
            close()
            continue
        i = 0
        while i < len(ids):
            tok = ids[i]
            if tok == v.comma:
                last_comma = len(cur.tokens)
            elif (len(cur.tokens) == CHUNK and last_comma != -1
                  and len(cur.tokens) - last_comma <= BACKTRACK):
                keep = last_comma + 1
                moved = Chunk(cur.tokens[keep:], cur.weights[keep:])
                cur.tokens, cur.weights = cur.tokens[:keep], cur.weights[:keep]
                close()
                cur = moved
            if len(cur.tokens) == CHUNK:
                close()
            n = v.groups.get(tok, 1)
            if n > 1 and len(cur.tokens) + n > CHUNK:
                close()  # an embedding's vectors are never split across chunks
            cur.tokens += ids[i:i + n]
            cur.weights += [weight] * len(ids[i:i + n])
            i += n
    if cur.tokens or not chunks:
        close()
    return chunks


@dataclass
class TextEncoder:
    tokenizer: Any
    model: Any
    min_skip: int  # 1: last layer; 2: penultimate (SDXL)
    final_norm: bool
    pooled: bool = False  # return the projected pooled output (SDXL's second encoder)


def _vocab(tok: Any, groups: dict[int, int]) -> Vocab:
    eos = tok.eos_token_id
    pad = tok.pad_token_id if tok.pad_token_id is not None else eos
    comma = tok.get_vocab().get(",</w>")
    return Vocab(tok.bos_token_id, eos, pad, comma, groups)


def embedding_groups(tok: Any) -> dict[int, int]:
    """Multi-vector textual inversions loaded by diffusers are tokens ``name``,
    ``name_1`` .. ``name_{n-1}``: map the first id to n."""
    added = tok.get_added_vocab()
    groups: dict[int, int] = {}
    for name, tid in added.items():
        n = 1
        while f"{name}_{n}" in added:
            n += 1
        if n > 1 and not name.rpartition("_")[2].isdigit():
            groups[tid] = n
    return groups


class PromptEncoder:
    def __init__(self, pipe: Any, style: str, clip_skip: int = 1) -> None:
        self.pipe = pipe
        self.style = style
        self.clip_skip = max(1, int(clip_skip))
        if style == "sdxl":
            self.encoders = [TextEncoder(pipe.tokenizer, pipe.text_encoder, 2, False),
                             TextEncoder(pipe.tokenizer_2, pipe.text_encoder_2, 2, False, True)]
            self.encoders = [e for e in self.encoders if e.model is not None]
        else:
            self.encoders = [TextEncoder(pipe.tokenizer, pipe.text_encoder, 1, True)]

    def _chunks(self, enc: TextEncoder, text: str) -> list[Chunk]:
        convert = getattr(self.pipe, "maybe_convert_prompt", None)
        pieces: list[tuple[list[int], float]] = []
        for part, weight in parse_attention(text):
            if part == BREAK and weight == -1.0:
                pieces.append(([-1], -1.0))
                continue
            if convert is not None:
                part = convert(part, enc.tokenizer)  # "emb" -> "emb emb_1 ..." (textual inv.)
            ids = enc.tokenizer(part, truncation=False, add_special_tokens=False)["input_ids"]
            pieces.append((list(ids), weight))
        return chunk_tokens(pieces, _vocab(enc.tokenizer, embedding_groups(enc.tokenizer)))

    def _encode(self, enc: TextEncoder, chunks: list[Chunk]) -> tuple[Any, Any]:
        import torch

        model = enc.model
        device = next(model.parameters()).device
        zs = []
        pooled = None
        for c in chunks:
            ids = torch.tensor([c.tokens], device=device)
            out = model(ids, output_hidden_states=True)
            z = out.hidden_states[-max(self.clip_skip if self.style == "sd" else 1,
                                       enc.min_skip)]
            if enc.final_norm:
                z = getattr(model, "text_model", model).final_layer_norm(z)
            if enc.pooled and pooled is None:
                pooled = out.text_embeds if hasattr(out, "text_embeds") else out[0]
            if any(w != 1.0 for w in c.weights):
                weights = torch.tensor(c.weights, device=device, dtype=z.dtype)
                mean = z.float().mean()
                z = z * weights.reshape(1, -1, 1)
                new = z.float().mean()
                if new.abs() > 1e-12:  # a zero mean (untrained norms) has nothing to restore
                    z = z * (mean / new).to(z.dtype)
            zs.append(z)
        return torch.cat(zs, dim=1), pooled

    def _side(self, text: str) -> tuple[list[list[Chunk]], int]:
        per = [self._chunks(e, text) for e in self.encoders]
        return per, max(len(c) for c in per)

    def __call__(self, prompt: str, negative: str) -> dict[str, Any]:
        """Keyword arguments for the pipeline call (prompt_embeds, negative..., pooled...)."""
        import torch

        pos, n_pos = self._side(prompt)
        neg, n_neg = self._side(negative)
        n = max(n_pos, n_neg)
        empty = self._chunks(self.encoders[0], "")[0]

        def pad(chunks: list[Chunk], enc: TextEncoder) -> list[Chunk]:
            fill = empty if enc is self.encoders[0] else self._chunks(enc, "")[0]
            return chunks + [fill] * (n - len(chunks))

        embeds = []
        for side in (pos, neg):
            parts, pooled = [], None
            for enc, chunks in zip(self.encoders, side, strict=True):
                z, p = self._encode(enc, pad(chunks, enc))
                parts.append(z)
                pooled = p if p is not None else pooled
            embeds.append((torch.cat(parts, dim=-1), pooled))
        (pe, pp), (ne, npool) = embeds
        out: dict[str, Any] = {"prompt_embeds": pe, "negative_prompt_embeds": ne}
        if self.style == "sdxl":
            if not negative.strip() and getattr(self.pipe.config, "force_zeros_for_empty_prompt",
                                                 False):
                ne = torch.zeros_like(pe)
                npool = torch.zeros_like(pp) if pp is not None else None
                out["negative_prompt_embeds"] = ne
            out["pooled_prompt_embeds"] = pp
            out["negative_pooled_prompt_embeds"] = npool
        return out

    def token_count(self, text: str) -> int:
        return len(self._chunks(self.encoders[0], text)) * CHUNK
