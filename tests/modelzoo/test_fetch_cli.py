"""``atelier fetch REF`` as a user runs it, against the loopback Civitai and Hub: placed by
type under the root, exit codes, --dry-run, and the login page that used to become a
file named ``1002`` with exit 0."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .standins import files
from .standins.civitai import CFile, CivitaiStandIn, CModel, CVersion
from .standins.huggingface import HFile, HfStandIn, HRepo

ROOT = Path(__file__).resolve().parents[2]


def atelier(tmp_path: Path, *args: str, env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get(
        "PYTHONPATH", ""), "ATELIER_STATE_DIR": str(tmp_path / "state"),
        "ATELIER_FETCH_RESERVE_BYTES": "0", **(env or {})}
    return subprocess.run([sys.executable, "-m", "atelier", "fetch", *args], env=full,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def lora(civitai: CivitaiStandIn) -> bytes:
    data = files.lora_kohya_sd15(pad=100_000)
    civitai.add(CModel(4201, "Ink", "LORA", [CVersion(
        1002, "v1", "SD 1.5", [CFile(10020, "ink.safetensors", data)], trained_words=["ink"])]))
    return data


def all_files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_fetch_by_reference_places_by_type(tmp_path: Path, civitai: CivitaiStandIn,
                                           lora: bytes) -> None:
    nas = tmp_path / "nas"
    env = {"ATELIER_CIVITAI_URL": civitai.url, "ATELIER_ROOT": str(nas)}
    out = atelier(tmp_path, "civitai:4201", "-q", env=env)
    assert out.returncode == 0, out.stderr
    model = nas / "models/Lora/ink.safetensors"
    assert out.stdout.strip() == f"{model.resolve()}  sha256 {files.sha(lora)}"
    assert model.read_bytes() == lora
    assert all_files(nas) == ["models/Lora/ink.civitai.info", "models/Lora/ink.json",
                              "models/Lora/ink.safetensors"]
    again = atelier(tmp_path, "civitai:4201", "-q", env=env)
    assert again.returncode == 0 and "(already there)" in again.stdout


def test_dry_run_prints_the_resolution_and_writes_nothing(tmp_path: Path,
                                                          civitai: CivitaiStandIn,
                                                          lora: bytes) -> None:
    env = {"ATELIER_CIVITAI_URL": civitai.url}
    out = atelier(tmp_path, "civitai:4201@1002", "--root", str(tmp_path / "nas"),
                  "--dry-run", "--json", env=env)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["destination"] == "models/Lora/ink.safetensors" and doc["type"] == "LORA"
    assert doc["files"][0]["sha256"] == files.sha(lora)
    assert not (tmp_path / "nas").exists()
    text = atelier(tmp_path, "civitai:4201", "--root", str(tmp_path / "nas"), "--dry-run",
                   env=env)
    assert "destination  models/Lora/ink.safetensors" in text.stdout
    assert "triggers     ink" in text.stdout


def test_a_login_page_fails_clearly_and_leaves_no_file(tmp_path: Path,
                                                       civitai: CivitaiStandIn,
                                                       lora: bytes) -> None:
    civitai.login_page.add(1002)
    dest = tmp_path / "dl"
    out = atelier(tmp_path, f"{civitai.url}/api/download/models/1002", "--to", str(dest),
                  env={"ATELIER_CIVITAI_URL": civitai.url})
    assert out.returncode == 3, out.stderr          # credentials: the message says which
    assert "HTML page" in out.stderr and "ATELIER_CIVITAI_TOKEN" in out.stderr
    assert not dest.exists() or all_files(dest) == []
    # the same page from a host that is not Civitai: not a model, exit 1, no file
    out = atelier(tmp_path, f"{civitai.url}/login", "--to", str(dest))
    assert out.returncode == 1 and "HTML page" in out.stderr
    assert not dest.exists() or all_files(dest) == []


def test_exit_codes(tmp_path: Path, civitai: CivitaiStandIn, lora: bytes) -> None:
    civitai.versions[1002].require_auth = True
    env = {"ATELIER_CIVITAI_URL": civitai.url, "ATELIER_ROOT": str(tmp_path / "nas")}
    out = atelier(tmp_path, "civitai:4201", env=env)
    assert out.returncode == 3 and "ATELIER_CIVITAI_TOKEN" in out.stderr
    ok = atelier(tmp_path, "civitai:4201", "-q", env={**env, "CIVITAI_TOKEN": civitai.token})
    assert ok.returncode == 0, ok.stderr
    before = len(civitai.traffic.log)
    bad = atelier(tmp_path, "ftp://example/x.safetensors", env=env)
    assert bad.returncode == 2 and "unknown scheme 'ftp'" in bad.stderr
    assert "civitai:<modelId>" in bad.stderr           # the accepted forms
    assert len(civitai.traffic.log) == before          # refused before any request
    nowhere = atelier(tmp_path, "civitai:4201", env={"ATELIER_CIVITAI_URL": civitai.url})
    assert nowhere.returncode == 2 and "--root" in nowhere.stderr
    missing = atelier(tmp_path, "civitai:777", env=env)
    assert missing.returncode == 1 and "not found" in missing.stderr


def test_hf_file_with_a_mirror_and_a_whole_repo(tmp_path: Path, hf: HfStandIn,
                                               hf_mirror: HfStandIn) -> None:
    vae = files.vae(pad=300_000)
    hf.add(HRepo("acme/vae", [HFile("sdxl_vae.safetensors", vae),
                              HFile("config.json", b"{}", lfs=False)]))
    env = {"HF_ENDPOINT": hf.url, "HF_HUB_OFFLINE": "0", "ATELIER_ROOT": str(tmp_path / "nas")}
    out = atelier(tmp_path, "hf:acme/vae/sdxl_vae.safetensors", "--mirror", hf_mirror.url,
                  "-q", env=env)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "nas/models/VAE/sdxl_vae.safetensors").read_bytes() == vae
    assert f"sha256 {files.sha(vae)}" in out.stdout
    out = atelier(tmp_path, "hf:acme/vae", "--include", "*.json", "--to", str(tmp_path / "r"),
                  "-q", env=env)
    assert out.returncode == 0, out.stderr
    assert all_files(tmp_path / "r") == ["acme/vae/config.json"]


def test_a_url_fetch_loads_no_database_layer() -> None:
    """`atelier fetch URL --to DIR` needs no library index or preview cache: SQLAlchemy
    (0.13 s of a start that a 128 MiB LoRA's download time is measured against) loads
    only when a fetch records into the library."""
    code = ("import sys; import modelzoo.fetch.cli, modelzoo.download, modelzoo.previews; "
            "print('sqlalchemy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "False"
