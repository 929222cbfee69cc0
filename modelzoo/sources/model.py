"""What a reference resolves to: the model, its files, and what the WebUI shows of it.

A :class:`Resolution` carries no secret: tokens are added per host when a file is
fetched (``auth`` names which one), so a resolution can be stored in a job row and
shown to the browser. ``preview_url`` is the remote image; the API hands out only a
key to our own preview route for it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Auth = Literal["civitai", "hf", "modelscope"] | None


@dataclass
class RemoteFile:
    name: str                    # the file name to write (naming.choose)
    path: str                    # relative path below the destination folder
    urls: list[str]              # the origin first, then mirrors serving the same bytes
    size: int | None = None
    size_exact: bool = True      # False: an estimate (Civitai's sizeKB), shown, not enforced
    sha256: str | None = None    # lower-case hex, verified by the engine when known
    primary: bool = True
    auth: Auth = None            # whose token the origin host gets
    model: bool = True           # weights (validated as such) rather than a config file

    def to_json(self) -> dict[str, Any]:
        return {"name": self.path, "size": self.size, "sha256": self.sha256,
                "primary": self.primary}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RemoteFile:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


@dataclass
class Resolution:
    ref: str                     # canonical form of the reference
    source: Literal["civitai", "huggingface", "modelscope", "url"]
    name: str
    type: str
    files: list[RemoteFile]
    version: str | None = None
    model_id: str | None = None
    version_id: str | None = None
    base_model: str | None = None
    preview_url: str | None = None
    trigger_words: list[str] = field(default_factory=list)
    description: str = ""
    info: dict[str, Any] | None = None   # the raw Civitai version JSON (.civitai.info)
    page: str | None = None              # the model's web page, for the notes sidecar
    folder: str | None = None            # a repo's own folder below the type folder
    sniffed: str | None = None           # why the type was guessed from the header
    sniff_after: bool = False            # no header before the download: look after it
    update: dict[str, Any] | None = None  # a newer version: {"version_id", "name"}

    @property
    def primary(self) -> RemoteFile:
        return next((f for f in self.files if f.primary), self.files[0])

    @property
    def size(self) -> int | None:
        sizes = [f.size for f in self.files]
        return None if any(s is None for s in sizes) else sum(s for s in sizes if s)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Resolution:
        data = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        data["files"] = [RemoteFile.from_dict(f) for f in d.get("files", [])]
        return cls(**data)
