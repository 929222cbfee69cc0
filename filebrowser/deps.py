"""Typed dependencies shared by the routers."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from .core import FileBrowser


def get_fb(request: Request) -> FileBrowser:
    fb: FileBrowser = request.app.state.fb
    return fb


FB = Annotated[FileBrowser, Depends(get_fb)]
