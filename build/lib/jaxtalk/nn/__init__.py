"""Shared layers: logical-partitioned factories, attention."""
