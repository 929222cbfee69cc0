"""File names: Content-Disposition, then the catalogue, then the user's URL; sanitised."""

from __future__ import annotations

import pytest

from modelzoo.naming import alternative, choose, content_disposition_name, sanitize


def test_content_disposition_forms() -> None:
    assert content_disposition_name('attachment; filename="a b.safetensors"') == "a b.safetensors"
    assert content_disposition_name("attachment; filename=plain.ckpt") == "plain.ckpt"
    assert content_disposition_name(
        "inline; filename*=UTF-8''%E6%A8%A1%E5%9E%8B.safetensors; filename=\"x.safetensors\";"
    ) == "模型.safetensors"
    assert content_disposition_name('attachment; filename="../../etc/passwd"') == "passwd"
    assert content_disposition_name("attachment") is None
    assert content_disposition_name(None) is None


def test_order_disposition_then_api_then_user_url_never_the_redirect() -> None:
    url = "https://civitai.com/api/download/models/1002"
    assert choose('attachment; filename="real.safetensors"', "api.safetensors", url) == \
        "real.safetensors"
    assert choose(None, "api.safetensors", url) == "api.safetensors"
    assert choose(None, None, "https://h/files/x.safetensors?sig=1") == "x.safetensors"


@pytest.mark.parametrize(("raw", "want"), [
    ("model.safetensors", "model.safetensors"),
    ("a/b/c.safetensors", "c.safetensors"),
    ("..\\..\\win.ckpt", "win.ckpt"),
    ("..", None), (".", None), ("", None), ("   ", None),
    (".hidden.safetensors", "hidden.safetensors"),
    ("bad\x00name\x1f.pt", "bad_name_.pt"),
    ('a:b*c?"d<e>f|g.bin', "a_b_c__d_e_f_g.bin"),
    ("CON.safetensors", "_CON.safetensors"), ("nul", "_nul"), ("lpt1.txt", "_lpt1.txt"),
    ("console.safetensors", "console.safetensors"),
    ("trailing.dot.", "trailing.dot"),
])
def test_sanitize(raw: str, want: str | None) -> None:
    assert sanitize(raw) == want


def test_long_names_keep_their_extension_within_255_bytes() -> None:
    name = sanitize("模" * 200 + ".safetensors")
    assert name is not None and name.endswith(".safetensors")
    assert len(name.encode()) <= 255


def test_alternative_names() -> None:
    assert alternative("x.safetensors", 2) == "x-2.safetensors"
    assert alternative("noext", 3) == "noext-3"
