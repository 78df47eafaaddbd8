"""Keel services: each a thin shell (consume, pure core, produce) around a deterministic core."""
