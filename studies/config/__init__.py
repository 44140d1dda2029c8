"""Study configuration: search spaces, samplers and pruners, and their validation.

Pure functions over JSON-like values (no database, no Optuna storage), except
``study.py``, which validates a whole study against the models and the objectives.
"""
