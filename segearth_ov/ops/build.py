"""Locate the compiled adaptive_conv extensions (native backends come in a later change)."""
from __future__ import annotations


def load_extension(backend: str):
    """The compiled module for ``backend`` ('cpu' or 'cuda'), or None when unavailable."""
    return None
