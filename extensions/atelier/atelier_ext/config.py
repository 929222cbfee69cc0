"""The service's configuration, as install.py wrote it.

install.py writes ``<webui>/.atelier/service.json`` and copies this extension to
``<webui>/extensions/atelier/``, so the file is found two folders above the extension;
``ATELIER_SERVICE_CONFIG`` names another file (a WebUI started with ``--data-dir``
elsewhere, or tests)::

    {"argv": ["<venv>/bin/python", "-I", "-m", "atelier", "serve", "--root", ...],
     "host": "127.0.0.1", "port": 7862, "nas_root": ..., "state_dir": ...,
     "log_file": "<state_dir>/service.log", "public_url": null, ...}
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

CONFIG_ENV = "ATELIER_SERVICE_CONFIG"


class ConfigError(Exception):
    """service.json is missing or unusable; the message says what to do."""


@dataclass(frozen=True)
class ServiceConfig:
    argv: tuple[str, ...]
    host: str
    port: int
    state_dir: Path
    log_file: Path
    nas_root: Path | None = None
    public_url: str | None = None

    @property
    def secret_file(self) -> Path:
        """The gateway secret the extension shares with the service it starts (0600)."""
        return self.state_dir / "webui-gateway.secret"

    @property
    def pid_file(self) -> Path:
        """Which service process the WebUI started, with which settings (JSON)."""
        return self.state_dir / "service.pid"

    @property
    def notice_file(self) -> Path:
        """The generated admin password, until the admin changes or dismisses it (0600)."""
        return self.state_dir / "admin-notice.json"

    @property
    def pins_file(self) -> Path:
        """Checkpoints pinned from the Models on GPU tab (the WebUI has no such notion)."""
        return self.state_dir / "webui-pins.json"

    def argv_for(self, nas_root: str | None) -> tuple[str, ...]:
        """The recorded command, with ``--root`` replaced when the WebUI settings name
        another NAS folder."""
        argv = list(self.argv)
        if nas_root:
            if "--root" in argv[:-1]:
                argv[argv.index("--root") + 1] = nas_root
            else:
                argv += ["--root", nas_root]
        return tuple(argv)

    @property
    def base_url(self) -> str:
        """Where the WebUI process reaches the service."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}"

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> ServiceConfig:
        try:
            argv = data["argv"]
            if not isinstance(argv, list) or not argv or not all(
                    isinstance(a, str) for a in argv):
                raise ConfigError("'argv' must be a non-empty list of strings")
            state_dir = Path(str(data["state_dir"]))
            port = data["port"]
            if not isinstance(port, int) or not 0 < port < 65536:
                raise ConfigError(f"'port' must be a port number, not {port!r}")
            public = data.get("public_url")
            nas = data.get("nas_root")
            return cls(
                argv=tuple(argv), host=str(data.get("host") or "127.0.0.1"), port=port,
                state_dir=state_dir,
                log_file=Path(str(data.get("log_file") or state_dir / "service.log")),
                nas_root=Path(str(nas)) if nas else None,
                public_url=str(public) if public else None)
        except KeyError as exc:
            raise ConfigError(f"missing key {exc}") from None


def find_config(extension_dir: Path, environ: Mapping[str, str] | None = None) -> Path:
    """The service.json this extension copy belongs to."""
    env = os.environ if environ is None else environ
    if env.get(CONFIG_ENV):
        return Path(env[CONFIG_ENV])
    return extension_dir.resolve().parent.parent / ".atelier" / "service.json"


def load_config(path: Path) -> ServiceConfig:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path} not found: run `python install.py --webui <webui> "
                          "--nas <nas>` from the Atelier repository") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: not a JSON object")
    try:
        return ServiceConfig.from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
