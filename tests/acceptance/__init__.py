"""The hostile-user acceptance suite (``hostile.py``): a fast subset in every test run, all of it with
``DTI_ACCEPTANCE=all python -m pytest tests/acceptance -q``."""
