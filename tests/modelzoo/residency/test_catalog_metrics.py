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


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition, as Prometheus would read it."""
    from prometheus_client.parser import text_string_to_metric_families

    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


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
    assert m.hit_rate("cuda:7") is None and m.oom_retries == 1
    got = samples(text)
    assert got[("atelier_gpu_switches_total", (("device", "cuda:0"), ("source", "gpu")))] == 2
    assert got[("atelier_gpu_switch_seconds_bucket", (("le", "2.5"), ("source", "disk")))] == 0
    assert got[("atelier_gpu_switch_seconds_bucket", (("le", "5.0"), ("source", "disk")))] == 1
    assert got[("atelier_gpu_switch_seconds_bucket", (("le", "+Inf"), ("source", "ram")))] == 1
    assert got[("atelier_gpu_evictions_total", (("from", "gpu"), ("to", "ram")))] == 1
    assert got[("atelier_gpu_oom_retries_total", ())] == 1
    assert got[("atelier_gpu_hit_ratio", (("device", "cuda:0"),))] == pytest.approx(2 / 3)
    assert got[("atelier_gpu_free_bytes", (("device", 'we"ird'),))] == 5
    assert "# TYPE atelier_gpu_switch_seconds histogram" in text.splitlines()
    # gauges the service hands over are read at each scrape
    level = [7.0]
    m.sample_with(lambda: [("queue_length", "Jobs.", (("device", "cuda:0"),), level[0])])
    assert samples(m.render())[("atelier_gpu_queue_length", (("device", "cuda:0"),))] == 7
    level[0] = 2.0
    assert samples(m.render())[("atelier_gpu_queue_length", (("device", "cuda:0"),))] == 2


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
