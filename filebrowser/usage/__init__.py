"""Quotas and usage accounting: bytes stored, uploaded and downloaded per user and day."""

from .ledger import Usage

__all__ = ["Usage"]
