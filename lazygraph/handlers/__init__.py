"""Per-library knowledge (numpy, pandas, torch), one module each; found by ``registry``.

No logic here: see ``handlers.registry`` (lookup, lazy loading) and ``handlers.base``.
"""
