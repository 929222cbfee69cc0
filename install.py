#!/usr/bin/env python3
"""Put Atelier into a Stable Diffusion WebUI (A1111 or Forge) container, or take it out.

    python install.py --webui DIR --nas DIR [--venv DIR] [--port 7862] [--state-dir DIR]
                      [--service-python PATH | --python PATH] [--public-url URL] [--dry-run]
    python install.py --webui DIR --uninstall [--dry-run]

What an install changes, every item recorded in the manifest ``.atelier/install.json``::

    <webui>/
      .atelier/
        install.json        the manifest: each change, and what was there before it
        service.json        read by the extension: the service's argv, NAS, port, state dir
        atelier-serve       launcher: runs the service by hand, with the same argv
        venv/               the service's own environment (not made with --service-python)
        backup/             WebUI placeholder files ("Put ... here.txt", "ESRGAN_here") moved aside
        state/              database and log: made by the service on local disk, kept
      extensions/atelier/   a copy of the extension (a copy: the repository may go away)
      models/Lora -> <nas>/models/Lora      for each model folder that was missing or empty
      embeddings  -> <nas>/models/embeddings

The service never runs inside the WebUI process: the WebUI pins old web stacks (A1111:
fastapi 0.94 and pydantic 1; Forge: fastapi 0.104 and pydantic 2.8), so it gets its
own virtual environment and the extension only starts it and shows its pages.

Running it again checks every item and changes only what differs ("nothing to do" when
all is in place). ``--uninstall`` first stops a running service of this installation
(found by its command line in /proc) and waits until it is gone, then undoes the recorded
changes in reverse order and puts back what was there; it never deletes anything on the
NAS nor the service's state.
A model folder that holds files is never moved or emptied: the script prints the
command-line flag that points the WebUI at the NAS folder instead.

Standard library only and Python 3.10 compatible: it may run under the WebUI's own
interpreter. Exit codes: 0 done (or nothing to do), 1 failure, 2 bad arguments.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent
EXTENSION_SOURCE = REPO / "extensions" / "atelier"
EXTENSION_NAME = "atelier"
MANIFEST_FORMAT = 1

# (folder under the WebUI, folder under <nas>/models, the WebUI flag that points elsewhere).
# A1111 and Forge read textual-inversion embeddings from <data_dir>/embeddings, not from
# models/ (modules/cmd_args.py: --embeddings-dir defaults to data_path/'embeddings').
MODEL_FOLDERS: tuple[tuple[str, str, str], ...] = (
    ("models/Stable-diffusion", "Stable-diffusion", "--ckpt-dir"),
    ("models/Lora", "Lora", "--lora-dir"),
    ("models/VAE", "VAE", "--vae-dir"),
    ("embeddings", "embeddings", "--embeddings-dir"),
    ("models/ControlNet", "ControlNet", "--controlnet-dir"),
    ("models/ESRGAN", "ESRGAN", "--esrgan-models-path"),
    ("models/hypernetworks", "hypernetworks", "--hypernetwork-dir"),
)

# Files a WebUI checkout ships in its empty model folders, e.g. A1111's
# "embeddings/Place Textual Inversion embeddings here.txt", sd-webui-controlnet's
# "put_controlnet_models_here.txt" and Forge's "models/ESRGAN/ESRGAN_here" (no suffix).
# They are moved aside (and back on --uninstall), so a fresh checkout counts as empty.
# Small files only: a big one named like that holds something.
PLACEHOLDER = re.compile(r"(?i)^(?:(?:put|place)[ _].*here|[\w.-]+_here)(?:\.txt)?$"
                         r"|^\.gitkeep$|^\.keep$")
PLACEHOLDER_MAX_BYTES = 64 * 1024

IGNORED_IN_TREE = ("__pycache__", "*.pyc")


class UsageError(Exception):
    """Bad arguments: exit code 2."""


class InstallError(Exception):
    """The install could not be done as asked: exit code 1."""


@dataclass
class Options:
    webui: Path
    nas: Path | None
    venv: Path
    state_dir: Path
    port: int
    host: str
    service_python: str | None
    base_python: str | None
    public_url: str | None
    uninstall: bool
    dry_run: bool

    @property
    def home(self) -> Path:
        return self.webui / ".atelier"

    @property
    def manifest_path(self) -> Path:
        return self.home / "install.json"


# -- small file helpers ---------------------------------------------------------------


def _write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write to a temporary name beside ``path``, fsync, then rename over it."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _tree_files(root: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for name in sorted(filenames):
            if not name.endswith(".pyc"):
                yield Path(dirpath, name)


def tree_digest(root: Path) -> str:
    """One hash over the relative names and contents of a folder (bytecode ignored)."""
    h = hashlib.sha256()
    for path in _tree_files(root):
        h.update(path.relative_to(root).as_posix().encode() + b"\0")
        h.update(_sha256(path.read_bytes()).encode() + b"\0")
    return h.hexdigest()


def _within(path: Path, root: Path) -> bool:
    a, b = os.path.realpath(path), os.path.realpath(root)
    return os.path.commonpath([a, b]) == b


def _prune_empty(start: Path, stop: Path) -> None:
    """Remove ``start`` and its parents while they are empty, up to (excluding) ``stop``."""
    d = start
    while d != stop and _within(d, stop) and d.is_dir() and not any(d.iterdir()):
        d.rmdir()
        d = d.parent


# -- the manifest ---------------------------------------------------------------------


@dataclass
class Manifest:
    """What this script changed, in order, with what was there before each change."""

    path: Path
    changes: list[dict] = field(default_factory=list)
    info: dict = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> Manifest:
        if not path.exists():
            return cls(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InstallError(f"cannot read the manifest {path}: {exc}") from exc
        if data.get("format") != MANIFEST_FORMAT:
            raise InstallError(f"{path}: unknown manifest format {data.get('format')!r}")
        return cls(path, list(data.get("changes", [])), dict(data.get("info", {})))

    def find(self, kind: str, path: Path | str) -> dict | None:
        for change in self.changes:
            if change["kind"] == kind and change["path"] == str(path):
                return change
        return None

    def record(self, change: dict) -> None:
        """Add a change, or update the one for the same item (keeping what was there first)."""
        old = self.find(change["kind"], change["path"])
        if old is None:
            self.changes.append(change)
        else:
            first = {k: old[k] for k in ("was", "mode", "moved", "created") if k in old}
            old.update(change)
            old.update(first)
        self.save()

    def save(self) -> None:
        data = {"format": MANIFEST_FORMAT, "info": self.info, "changes": self.changes}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _write_atomic(self.path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())


# -- the plan -------------------------------------------------------------------------


@dataclass
class Step:
    """One change still to make: what it is, and how to make it."""

    description: str
    apply: Callable[[Manifest], None]


@dataclass
class Plan:
    steps: list[Step] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, description: str, apply: Callable[[Manifest], None]) -> None:
        self.steps.append(Step(description, apply))


def _run(argv: list[str], what: str) -> None:
    print(f"  $ {shlex.join(argv)}", flush=True)
    rc = subprocess.call(argv)
    if rc != 0:
        raise InstallError(f"{what} failed (exit code {rc})")


def _probe_atelier(python: str) -> str | None:
    """The ``atelier`` version installed for ``python``, or None if it has none."""
    code = "import atelier.cli, importlib.metadata as m; print(m.version('atelier'))"
    try:
        # -I: neither the current folder nor PYTHONPATH may lend it an atelier.
        r = subprocess.run([python, "-I", "-c", code], capture_output=True, text=True,
                           timeout=120)
    except OSError:
        return None
    return (r.stdout.strip() or None) if r.returncode == 0 else None


def repo_version() -> str:
    text = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    m = re.search(r'^version\s*=\s*"([^"]+)"', text, re.M)
    return m.group(1) if m else "0"


def _find_base_python(given: str | None) -> str:
    """An interpreter new enough (3.11+) to make the service's venv from."""
    if given:
        return given
    # install.py itself may run under the WebUI's Python 3.10, hence the check.
    if sys.version_info >= (3, 11):  # noqa: UP036
        return sys.executable
    for name in ("python3.13", "python3.12", "python3.11"):
        found = shutil.which(name)
        if found:
            return found
    raise InstallError("the service needs Python 3.11 or newer: none found on PATH; "
                       "pass --python PATH (or --service-python PATH)")


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def service_python(opts: Options) -> str:
    # A venv's python is a symlink: keep the path as given, never resolve it.
    return opts.service_python or str(venv_python(opts.venv))


def service_argv(opts: Options) -> list[str]:
    assert opts.nas is not None
    # -I (isolated): the WebUI's PYTHONPATH and working folder must not leak into the service.
    return [service_python(opts), "-I", "-m", "atelier", "serve", "--root", str(opts.nas),
            "--state-dir", str(opts.state_dir), "--host", opts.host, "--port", str(opts.port),
            "--log-level", "warning"]


def service_config(opts: Options) -> bytes:
    assert opts.nas is not None
    cfg = {
        "format": 1,
        "argv": service_argv(opts),
        "python": service_python(opts),
        "nas_root": str(opts.nas),
        "state_dir": str(opts.state_dir),
        "log_file": str(opts.state_dir / "service.log"),
        "host": opts.host,
        "port": opts.port,
        "public_url": opts.public_url,
    }
    return (json.dumps(cfg, indent=2, sort_keys=True) + "\n").encode()


def launcher_script(opts: Options) -> bytes:
    secret = shlex.quote(str(opts.state_dir / "webui-gateway.secret"))
    return (
        "#!/bin/sh\n"
        "# Written by Atelier's install.py: runs the standalone service by hand, with the\n"
        "# same command the WebUI extension uses (.atelier/service.json). Extra arguments\n"
        "# are passed on, e.g. --log-level info. With the extension's gateway secret, the\n"
        "# WebUI uses this service as its own (WebUI users map to Atelier users).\n"
        f"if [ -r {secret} ]; then\n"
        f"    ATELIER_GATEWAY_SECRET=$(cat {secret}); export ATELIER_GATEWAY_SECRET\n"
        "fi\n"
        f"exec {shlex.join(service_argv(opts))} \"$@\"\n"
    ).encode()


def _ensure_dir(plan: Plan, manifest: Manifest, path: Path, planned: set[Path]) -> None:
    """Plan to create ``path`` (and missing parents), each recorded for --uninstall."""
    missing: list[Path] = []
    d = path
    while not d.exists() and not d.is_symlink() and d not in planned:
        missing.append(d)
        d = d.parent
    for d in reversed(missing):
        planned.add(d)

        def make(m: Manifest, d: Path = d) -> None:
            d.mkdir()
            m.record({"kind": "dir", "path": str(d)})

        plan.add(f"create {d}", make)


def plan_install(opts: Options, manifest: Manifest) -> Plan:
    assert opts.nas is not None
    plan = Plan()
    planned: set[Path] = set()
    _ensure_dir(plan, manifest, opts.home, planned)
    _plan_service_env(plan, opts, manifest, planned)
    _plan_extension(plan, opts, manifest, planned)
    _plan_model_folders(plan, opts, manifest, planned)
    _plan_file(plan, manifest, opts.home / "service.json", service_config(opts), 0o644)
    _plan_file(plan, manifest, opts.home / "atelier-serve", launcher_script(opts), 0o755)
    return plan


def _plan_service_env(plan: Plan, opts: Options, manifest: Manifest, planned: set[Path]) -> None:
    if opts.service_python:
        if _probe_atelier(opts.service_python) is None:
            raise UsageError(f"--service-python {opts.service_python}: atelier is not installed "
                             "for it (leave the option out to make a virtual environment)")
        return
    want = repo_version()
    py = venv_python(opts.venv)
    have = _probe_atelier(str(py)) if py.exists() else None
    if have == want:
        return
    base = _find_base_python(opts.base_python)

    def build(m: Manifest) -> None:
        if not py.exists():
            existed = opts.venv.exists()
            _run([base, "-m", "venv", str(opts.venv)], "creating the virtual environment")
            m.record({"kind": "venv", "path": str(opts.venv), "created": not existed})
        _run([str(py), "-m", "pip", "install", "--disable-pip-version-check",
              "--upgrade", str(REPO)], f"pip install {REPO}")
        if _probe_atelier(str(py)) is None:
            raise InstallError(f"atelier does not import in {opts.venv} after pip install")

    if py.exists():
        plan.add(f"install atelier {want} into {opts.venv} (found {have or 'none'})", build)
    else:
        plan.add(f"create the service's virtual environment {opts.venv} "
                 f"({base}) and pip install {REPO}", build)


def _plan_extension(plan: Plan, opts: Options, manifest: Manifest, planned: set[Path]) -> None:
    if not EXTENSION_SOURCE.is_dir():
        raise InstallError(f"the extension's source {EXTENSION_SOURCE} is missing")
    dest = opts.webui / "extensions" / EXTENSION_NAME
    ours = manifest.find("extension", dest)
    want = tree_digest(EXTENSION_SOURCE)
    if dest.exists() or dest.is_symlink():
        if ours is None:
            raise InstallError(f"{dest} exists and was not installed by this script: "
                               "it is left alone; move it away and run install.py again")
        if not dest.is_symlink() and dest.is_dir() and tree_digest(dest) == want:
            return
        verb = "update"
    else:
        verb = "copy"
    _ensure_dir(plan, manifest, dest.parent, planned)

    def copy(m: Manifest) -> None:
        staging = Path(tempfile.mkdtemp(prefix="ext-", dir=opts.home))
        try:
            shutil.copytree(EXTENSION_SOURCE, staging / EXTENSION_NAME,
                            ignore=shutil.ignore_patterns(*IGNORED_IN_TREE))
            if dest.is_symlink() or dest.is_file():
                dest.unlink()
            elif dest.exists():
                dest.rename(staging / "old")
            (staging / EXTENSION_NAME).rename(dest)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        m.record({"kind": "extension", "path": str(dest), "digest": want})

    plan.add(f"{verb} the extension {EXTENSION_SOURCE} -> {dest}", copy)


def _plan_model_folders(plan: Plan, opts: Options, manifest: Manifest,
                        planned: set[Path]) -> None:
    assert opts.nas is not None
    for rel, nas_name, flag in MODEL_FOLDERS:
        path = opts.webui / rel
        target = opts.nas / "models" / nas_name
        if not target.is_dir():
            def make_target(m: Manifest, target: Path = target) -> None:
                # On the NAS: made for the link to lead somewhere, never removed.
                target.mkdir(parents=True, exist_ok=True)
            plan.add(f"create {target} on the NAS", make_target)
        ours = manifest.find("link", path)
        advice = (f"add `{flag} {shlex.quote(str(target))}` to COMMANDLINE_ARGS "
                  "(webui-user.sh), or move the files to the NAS folder and run install.py again")
        if path.is_symlink():
            current = os.readlink(path)
            if current == str(target):
                continue
            if ours is None:
                plan.notes.append(f"{path} is a link to {current} that install.py did not make: "
                                  f"left alone. To use the NAS folder, {advice}.")
                continue
            plan.add(f"re-point {path} -> {target} (was -> {current})",
                     _relink(path, target))
        elif not path.exists():
            _ensure_dir(plan, manifest, path.parent, planned)
            plan.add(f"link {path} -> {target}", _link_missing(path, target))
        elif path.is_dir():
            entries = sorted(os.listdir(path))
            placeholders = [e for e in entries if _is_placeholder(path / e)]
            others = [e for e in entries if e not in placeholders]
            if others:
                plan.notes.append(f"{path} holds {len(others)} entr"
                                  f"{'y' if len(others) == 1 else 'ies'}: left alone. "
                                  f"To use the NAS folder, {advice}.")
                continue
            extra = f" (moving {len(placeholders)} placeholder file(s) to " \
                    f"{opts.home / 'backup'})" if placeholders else ""
            plan.add(f"replace the empty folder {path} with a link -> {target}{extra}",
                     _link_empty_dir(opts, path, target, placeholders))
        else:
            plan.notes.append(f"{path} is a file, not a folder: left alone. {advice}.")


def _is_placeholder(path: Path) -> bool:
    return (PLACEHOLDER.match(path.name) is not None and path.is_file()
            and not path.is_symlink() and path.stat().st_size <= PLACEHOLDER_MAX_BYTES)


def _relink(path: Path, target: Path) -> Callable[[Manifest], None]:
    def apply(m: Manifest) -> None:
        tmp = path.with_name(f".{path.name}.atelier-link")
        if tmp.is_symlink():
            tmp.unlink()
        os.symlink(target, tmp, target_is_directory=True)
        os.replace(tmp, path)
        m.record({"kind": "link", "path": str(path), "target": str(target)})
    return apply


def _link_missing(path: Path, target: Path) -> Callable[[Manifest], None]:
    def apply(m: Manifest) -> None:
        os.symlink(target, path, target_is_directory=True)
        m.record({"kind": "link", "path": str(path), "target": str(target), "was": "missing"})
    return apply


def _link_empty_dir(opts: Options, path: Path, target: Path,
                    placeholders: list[str]) -> Callable[[Manifest], None]:
    def apply(m: Manifest) -> None:
        mode = stat.S_IMODE(path.stat().st_mode)
        backup = opts.home / "backup" / path.relative_to(opts.webui)
        moved: list[dict] = []
        for name in placeholders:
            backup.mkdir(parents=True, exist_ok=True)
            os.replace(path / name, backup / name)
            moved.append({"from": str(path / name), "to": str(backup / name)})
        try:
            path.rmdir()  # fails, rightly, if a file appeared since the plan
        except OSError:
            for item in moved:
                os.replace(item["to"], item["from"])
            raise
        os.symlink(target, path, target_is_directory=True)
        m.record({"kind": "link", "path": str(path), "target": str(target), "was": "dir",
                  "mode": mode, "moved": moved})
    return apply


def _plan_file(plan: Plan, manifest: Manifest, path: Path, data: bytes, mode: int) -> None:
    ours = manifest.find("file", path)
    if path.is_file() and path.read_bytes() == data:
        if ours is not None:
            return
    elif path.exists() and ours is None:
        raise InstallError(f"{path} exists and was not written by this script: left alone")

    def write(m: Manifest) -> None:
        _write_atomic(path, data, mode)
        m.record({"kind": "file", "path": str(path), "sha256": _sha256(data)})

    plan.add(f"{'write' if ours is None else 'update'} {path}", write)


# -- uninstall ------------------------------------------------------------------------


def _procs_module() -> types.ModuleType:
    """The extension's process finder, loaded from its file (standard library only)."""
    path = EXTENSION_SOURCE / "atelier_ext" / "procs.py"
    spec = importlib.util.spec_from_file_location("atelier_install_procs", path)
    if spec is None or spec.loader is None:
        raise InstallError(f"{path} is missing")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _stop_services(opts: Options) -> None:
    """Stop this installation's running service (started by the WebUI or by hand) and
    wait until it is gone, before its venv and extension are removed under it."""
    try:
        argv = json.loads((opts.home / "service.json").read_text(encoding="utf-8"))["argv"]
    except (OSError, ValueError, KeyError, TypeError):
        return
    procs = _procs_module()
    pids = procs.find_services(argv)
    if not pids:
        return
    listed = ", ".join(map(str, pids))
    print(f"- {'would stop' if opts.dry_run else 'stop'} the running Atelier service "
          f"(pid {listed}) and wait until it is gone", flush=True)
    if opts.dry_run:
        return
    left = procs.terminate(pids, timeout=15.0)
    if left:
        raise InstallError(f"cannot stop the Atelier service (pid {', '.join(map(str, left))}):"
                           " stop it (or the WebUI) and run --uninstall again; nothing was "
                           "removed")


def plan_uninstall(opts: Options, manifest: Manifest) -> Plan:
    plan = Plan()
    for change in reversed(manifest.changes):
        undo = _undo(opts, change, plan.notes)
        if undo is not None:
            plan.add(undo[0], undo[1])

    def forget(m: Manifest) -> None:
        m.path.unlink()
        _prune_empty(opts.home, opts.webui)
        if opts.home.exists():
            left = ", ".join(sorted(p.name for p in opts.home.iterdir()))
            print(f"kept {opts.home} (not made by install.py: {left}); "
                  "remove it by hand when no longer needed")

    plan.add(f"remove the manifest {manifest.path}", forget)
    return plan


def _undo(opts: Options, change: dict,
          notes: list[str]) -> tuple[str, Callable[[Manifest], None]] | None:
    kind, path = change["kind"], Path(change["path"])
    if kind == "link":
        if not path.is_symlink() or os.readlink(path) != change["target"]:
            notes.append(f"{path} was changed after install: left as it is")
            return None

        def unlink(m: Manifest) -> None:
            path.unlink()
            if change.get("was") == "dir":
                path.mkdir()
                os.chmod(path, change["mode"])
                for item in change.get("moved", []):
                    os.replace(item["to"], item["from"])
                    _prune_empty(Path(item["to"]).parent, opts.home)

        what = "restore the empty folder" if change.get("was") == "dir" else "remove the link"
        return f"{what} {path} (the NAS folder {change['target']} stays)", unlink
    if kind == "extension":
        if not path.exists() and not path.is_symlink():
            return None
        return f"remove the extension {path}", lambda m: shutil.rmtree(path)
    if kind == "file":
        if not path.is_file():
            return None
        if _sha256(path.read_bytes()) != change["sha256"]:
            notes.append(f"{path} was edited after install: left as it is")
            return None
        return f"remove {path}", lambda m: path.unlink()
    if kind == "venv":
        if not change.get("created"):
            notes.append(f"{path} existed before install: left as it is")
            return None
        if not path.exists():
            return None
        return f"remove the virtual environment {path}", lambda m: shutil.rmtree(path)
    if kind == "dir":
        if not path.is_dir() or path.is_symlink():
            return None

        def rmdir(m: Manifest) -> None:
            if any(path.iterdir()):
                if path != opts.home:
                    print(f"kept {path}: it is not empty")
            else:
                path.rmdir()
        return f"remove the folder {path} if empty", rmdir
    notes.append(f"unknown change {kind!r} for {path}: left as it is")
    return None


# -- arguments and main ---------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="install.py", description="Install Atelier into a Stable Diffusion WebUI "
        "(A1111 or Forge) folder, idempotently; --uninstall reverses it.")
    p.add_argument("--webui", required=True, help="the WebUI folder (holds webui.py/launch.py)")
    p.add_argument("--nas", help="the NAS folder (models/, outputs/, users/); "
                   "required unless --uninstall")
    p.add_argument("--venv", help="the service's virtual environment "
                   "(default <webui>/.atelier/venv)")
    p.add_argument("--state-dir", help="the service's local state: database, logs; never on the "
                   "NAS (default <webui>/.atelier/state)")
    p.add_argument("--port", type=int, default=7862, help="the service's port (default 7862)")
    p.add_argument("--host", default="127.0.0.1", help="the service's address (default "
                   "127.0.0.1: only the WebUI container reaches it)")
    p.add_argument("--public-url", help="the service's address as the browser sees it, if "
                   "a gateway publishes it (the tabs then point there)")
    py = p.add_mutually_exclusive_group()
    py.add_argument("--service-python", help="use this interpreter, which already has atelier "
                    "installed, instead of making a virtual environment")
    py.add_argument("--python", dest="base_python", help="make the virtual environment with "
                    "this interpreter (3.11+; default: this one, or python3.1x on PATH)")
    p.add_argument("--uninstall", action="store_true", help="undo what install.py did")
    p.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    return p


def _abs(p: str) -> Path:
    return Path(os.path.abspath(os.path.expanduser(p)))


def parse_options(argv: list[str] | None) -> Options:
    args = build_parser().parse_args(argv)
    webui = _abs(args.webui)
    if not webui.is_dir():
        raise UsageError(f"--webui {webui}: not a folder")
    if not any((webui / n).exists() for n in ("webui.py", "launch.py", "modules")):
        raise UsageError(f"--webui {webui}: not a WebUI folder (no webui.py, launch.py "
                         "or modules/ there)")
    nas = _abs(args.nas) if args.nas else None
    if not args.uninstall:
        if nas is None:
            raise UsageError("--nas is required")
        if not nas.is_dir():
            raise UsageError(f"--nas {nas}: not a folder (is the NAS mounted?)")
    if not 0 < args.port < 65536:
        raise UsageError(f"--port {args.port}: not a port number")
    state = _abs(args.state_dir) if args.state_dir else webui / ".atelier" / "state"
    if nas is not None and _within(state, nas):
        # SQLite locking is unreliable on NFS, and replicas would share one database.
        raise UsageError(f"--state-dir {state} is on the NAS: it must be on local disk")
    service_py = None
    if args.service_python:
        service_py = os.path.abspath(args.service_python)
        if not os.access(service_py, os.X_OK) or not os.path.isfile(service_py):
            raise UsageError(f"--service-python {service_py}: not an executable file")
    if args.public_url and not re.match(r"^https?://", args.public_url):
        raise UsageError(f"--public-url {args.public_url}: give an http(s):// address")
    return Options(
        webui=webui, nas=nas, venv=_abs(args.venv) if args.venv else webui / ".atelier" / "venv",
        state_dir=state, port=args.port, host=args.host, service_python=service_py,
        base_python=args.base_python, public_url=args.public_url, uninstall=args.uninstall,
        dry_run=args.dry_run)


def _execute(plan: Plan, manifest: Manifest, dry_run: bool) -> None:
    prefix = "would " if dry_run else ""
    for step in plan.steps:
        print(f"- {prefix}{step.description}", flush=True)
        if not dry_run:
            step.apply(manifest)


def install(opts: Options) -> int:
    manifest = Manifest.load(opts.manifest_path)
    plan = plan_install(opts, manifest)
    if not plan.steps:
        print(f"Atelier is already installed in {opts.webui}: nothing to do.")
    else:
        print(f"{'Plan' if opts.dry_run else 'Installing'} Atelier in {opts.webui}:")
        manifest.info = {"webui": str(opts.webui), "nas": str(opts.nas),
                         "state_dir": str(opts.state_dir), "port": opts.port}
        _execute(plan, manifest, opts.dry_run)
    for note in plan.notes:
        print(f"note: {note}")
    if opts.dry_run:
        print("dry run: nothing was changed.")
    elif plan.steps:
        print(f"Done. Restart the WebUI: the tabs FileBrowser, ModelZoo and Models on GPU "
              f"(through the WebUI's own address, under /atelier/) start the service on "
              f"http://{opts.host}:{opts.port} and stop it with the WebUI (log: "
              f"{opts.state_dir / 'service.log'}). On its first start the WebUI console and "
              f"the FileBrowser tab show the generated 'admin' password. To run it by hand: "
              f"{opts.home / 'atelier-serve'}. To undo: python {Path(__file__).name} "
              f"--webui {shlex.quote(str(opts.webui))} --uninstall")
    return 0


def uninstall(opts: Options) -> int:
    if not opts.manifest_path.exists():
        print(f"Atelier is not installed in {opts.webui} (no {opts.manifest_path}): "
              "nothing to uninstall.")
        return 0
    manifest = Manifest.load(opts.manifest_path)
    plan = plan_uninstall(opts, manifest)
    print(f"{'Plan' if opts.dry_run else 'Uninstalling'} Atelier from {opts.webui}:")
    _stop_services(opts)
    _execute(plan, manifest, opts.dry_run)
    for note in plan.notes:
        print(f"note: {note}")
    print("dry run: nothing was changed." if opts.dry_run else
          "Done. Files on the NAS were not touched.")
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        opts = parse_options(argv)
        return uninstall(opts) if opts.uninstall else install(opts)
    except UsageError as exc:
        print(f"install.py: error: {exc}", file=sys.stderr)
        return 2
    except (InstallError, OSError) as exc:
        print(f"install.py: failed: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
