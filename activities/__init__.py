"""Quench's activities: every AWS side effect, one module per AWS concern, each idempotent."""
