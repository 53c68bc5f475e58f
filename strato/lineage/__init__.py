"""Lineage: where every disk came from and what keeps it alive (docs/lineage.md)."""
