"""The desktop commands (``atelier login|push|pull|usage``) over the service's HTTP API."""

from .cli import register

__all__ = ["register"]
