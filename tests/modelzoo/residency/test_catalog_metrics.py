from __future__ import annotations

import os
from pathlib import Path

import pytest

from modelzoo.errors import UnknownModel
from modelzoo.residency.catalog import ModelCatalog
from modelzoo.residency.metrics import ResidencyMetrics


def test_catalog_names_and_resolution(models_dir: Path, write_ckpt, tmp_path: Path) -> None:
    write_ckpt(models_dir / "sd15.safetensors", {"unet": 1024})
    write_ckpt(models_dir / "xl" / "juggernaut.safetensors", {"unet": 2048})
    (models_dir / "pipe" / "unet").mkdir(parents=True)
    (models_dir / "pipe" / "model_index.json").write_text("{}")
    write_ckpt(models_dir / "pipe" / "unet" / "diffusion_pytorch_model.safetensors",
               {"other": 512})
    (models_dir / "old.ckpt").write_bytes(b"pickle")
    outside = write_ckpt(tmp_path / "secret.safetensors", {"unet": 64})
    os.symlink(outside, models_dir / "link.safetensors")
    cat = ModelCatalog(models_dir)
    assert cat.names() == ["link", "pipe", "sd15", "xl/juggernaut"]
    assert cat.get("xl/juggernaut").nbytes == 2048
    assert cat.get("sd15.safetensors [0123456789]").name == "sd15"
    assert cat.get("pipe").footprint.components == {"unet": 512}
    for bad in ("../secret", "link", "old", "old.ckpt", "/etc/passwd", "", "x\0y", "nope"):
        with pytest.raises(UnknownModel):
            cat.get(bad)


def test_footprint_cache_follows_the_file(models_dir: Path, write_ckpt) -> None:
    p = write_ckpt(models_dir / "m.safetensors", {"unet": 1024})
    cat = ModelCatalog(models_dir)
    assert cat.get("m").nbytes == 1024
    write_ckpt(p, {"unet": 4096})
    os.utime(p, ns=(1, 1))
    assert cat.get("m").nbytes == 4096


def test_metrics_text_format() -> None:
    m = ResidencyMetrics()
    m.record_switch("cuda:0", "disk", 3.0)
    m.record_switch("cuda:0", "gpu", 0.0)
    m.record_switch("cuda:0", "gpu", 0.0)
    m.record_switch("cuda:1", "ram", 0.4)
    m.record_eviction("gpu", "ram")
    m.record_oom()
    text = m.render([("free_bytes", "Free.", (("device", 'we"ird'),), 5)])
    assert m.hit_rate("cuda:0") == pytest.approx(2 / 3) and m.hit_rate() == 0.5
    assert m.hit_rate("cuda:7") is None
    lines = text.splitlines()
    assert 'atelier_gpu_switches_total{device="cuda:0",source="gpu"} 2' in lines
    assert 'atelier_gpu_switch_seconds_bucket{source="disk",le="2.5"} 0' in lines
    assert 'atelier_gpu_switch_seconds_bucket{source="disk",le="5.0"} 1' in lines
    assert 'atelier_gpu_switch_seconds_bucket{source="ram",le="+Inf"} 1' in lines
    assert 'atelier_gpu_evictions_total{from="gpu",to="ram"} 1' in lines
    assert "atelier_gpu_oom_retries_total 1" in lines
    assert 'atelier_gpu_free_bytes{device="we\\"ird"} 5' in lines
    assert "# TYPE atelier_gpu_switch_seconds histogram" in lines
    assert text.endswith("\n")


def test_package_import_is_lazy() -> None:
    import subprocess
    import sys

    code = ("import sys\n"
            "import modelzoo.residency as r\n"
            "bad = [m for m in ('torch', 'diffusers', 'fastapi', 'sqlalchemy') "
            "if m in sys.modules]\n"
            "assert not bad, bad\n"
            "assert r.Tier.GPU.value == 'gpu'\n"
            "assert 'torch' not in sys.modules\n"
            "assert callable(r.build_router) and 'fastapi' in sys.modules\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[3], timeout=120)
    assert out.returncode == 0, out.stderr
