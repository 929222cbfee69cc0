"""Every accepted reference form parses to what it names; anything else fails at once,
listing the accepted forms."""

from __future__ import annotations

import pytest

from modelzoo.errors import BadReference
from modelzoo.sources.refs import ACCEPTED, CivitaiRef, HfRef, ModelScopeRef, UrlRef, parse

GOOD = [
    ("civitai:4201", CivitaiRef("4201", None)),
    ("civitai:4201@130072", CivitaiRef("4201", "130072")),
    ("civitai:@130072", CivitaiRef(None, "130072")),
    ("urn:air:sdxl:lora:civitai:827184@2514310", CivitaiRef("827184", "2514310")),
    ("urn:air:sd1:checkpoint:civitai:4201", CivitaiRef("4201", None)),
    ("urn:air:sdxl:checkpoint:civitai:827184@2514310.safetensors",
     CivitaiRef("827184", "2514310")),
    ("https://civitai.com/models/4201?modelVersionId=130072", CivitaiRef("4201", "130072")),
    ("https://civitai.com/models/4201/realistic-vision", CivitaiRef("4201", None)),
    ("https://civitai.red/models/4201/x?modelVersionId=9", CivitaiRef("4201", "9")),
    ("https://civitai.com/api/download/models/130072", CivitaiRef(None, "130072")),
    ("https://civitai.com/api/download/models/130072?fileId=55&type=Model",
     CivitaiRef(None, "130072", "55")),
    ("  civitai:4201  ", CivitaiRef("4201", None)),
    ("hf:org/repo/unet/x.safetensors", HfRef("org/repo", "unet/x.safetensors", None)),
    ("hf:org/repo/x.safetensors@v1.0", HfRef("org/repo", "x.safetensors", "v1.0")),
    ("hf:org/repo", HfRef("org/repo", None, None)),
    ("hf:org/repo@refs/pr/3", HfRef("org/repo", None, "refs/pr/3")),
    ("https://huggingface.co/org/repo/blob/main/x.safetensors",
     HfRef("org/repo", "x.safetensors", "main")),
    ("https://huggingface.co/org/repo/resolve/abc123/sub/x.safetensors?download=true",
     HfRef("org/repo", "sub/x.safetensors", "abc123")),
    ("https://huggingface.co/org/repo/resolve/refs%2Fpr%2F1/x.bin",
     HfRef("org/repo", "x.bin", "refs/pr/1")),
    ("https://hf-mirror.com/org/repo/resolve/main/x.safetensors",
     HfRef("org/repo", "x.safetensors", "main")),
    ("https://huggingface.co/org/repo", HfRef("org/repo", None, None)),
    ("https://huggingface.co/org/repo/tree/dev", HfRef("org/repo", None, "dev")),
    ("modelscope:org/repo/x.safetensors", ModelScopeRef("org/repo", "x.safetensors", None)),
    ("modelscope:org/repo/a/x.safetensors@v2", ModelScopeRef("org/repo", "a/x.safetensors",
                                                             "v2")),
    ("https://modelscope.cn/models/org/repo/resolve/master/x.safetensors",
     ModelScopeRef("org/repo", "x.safetensors", "master")),
    ("https://example.com/files/x.safetensors", UrlRef("https://example.com/files/x.safetensors")),
    ("http://127.0.0.1:8000/dl?id=3", UrlRef("http://127.0.0.1:8000/dl?id=3")),
    # a Civitai host but not a model path: a plain URL
    ("https://civitai.com/images/123", UrlRef("https://civitai.com/images/123")),
]


@pytest.mark.parametrize(("text", "want"), GOOD, ids=[g[0].strip()[:60] for g in GOOD])
def test_accepted_forms(text: str, want: object) -> None:
    assert parse(text) == want


BAD = ["", "   ", "ftp://host/x.safetensors", "s3://bucket/key", "file:///etc/passwd",
       "magnet:?xt=urn:btih:abc", "civitai:", "civitai:abc", "civitai:12@", "civitai:12@x",
       "hf:repo", "hf:org/../x", "hf:org/repo/../../etc/passwd", "hf:org/repo/a//b",
       "hf:org/repo/x@", "modelscope:org", "urn:air:sdxl:lora:civitai:abc@1",
       "urn:air:sdxl:lora:unknownhub:1@2", "urn:air:broken", "just some words",
       "https://civitai.com/models/notanumber", "http://", "civitai:1\n2",
       "https://civitai.com/models/1?modelVersionId=x"]


@pytest.mark.parametrize("text", BAD)
def test_refused_at_once_with_the_accepted_forms(text: str) -> None:
    with pytest.raises(BadReference) as e:
        parse(text)
    assert e.value.status == 400 and e.value.code == "bad_reference"
    assert ACCEPTED in str(e.value)


def test_unknown_scheme_is_named() -> None:
    with pytest.raises(BadReference, match="unknown scheme 'ftp'"):
        parse("ftp://host/x")


def test_configured_hosts_count_as_their_source_by_host_and_port() -> None:
    civ = "http://127.0.0.1:9001"
    hub = "http://127.0.0.1:9002"
    assert parse(f"{civ}/models/7?modelVersionId=8", civitai_urls=[civ],
                 hf_urls=[hub]) == CivitaiRef("7", "8")
    assert parse(f"{hub}/org/repo/resolve/main/x.safetensors", civitai_urls=[civ],
                 hf_urls=[hub]) == HfRef("org/repo", "x.safetensors", "main")
    # the same host on another port is just a URL
    other = "http://127.0.0.1:9003/models/7"
    assert parse(other, civitai_urls=[civ], hf_urls=[hub]) == UrlRef(other)


def test_canonical_forms_round_trip() -> None:
    for text in ("civitai:4201@130072", "civitai:@5", "hf:org/repo/x.safetensors@main",
                 "hf:org/repo", "modelscope:org/repo/x.safetensors@v2"):
        ref = parse(text)
        assert not isinstance(ref, UrlRef)
        assert ref.canonical == text
        assert parse(ref.canonical) == ref
