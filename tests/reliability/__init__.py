"""Reliability suite: fault injection, property and stress tests (SPEC S7, S5.7, S5.8)."""
