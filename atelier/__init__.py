"""Atelier: the ops suite for Stable Diffusion WebUI in the cloud.

This package is the one small edge where the standalone service and the command
line are composed from ``filebrowser`` and ``modelzoo``, which never import each other.
"""

__version__ = "0.1.0"
