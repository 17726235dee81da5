"""Build-time scripts of dti-mini: they train, measure and describe the shipped model and judge.

Nothing a user imports at run time (`dti`, `dti.cli`, `dti demo`, `dti.mini.model`, `dti.mini.judge`)
imports this package (tests/test_layering.py checks it).
"""
