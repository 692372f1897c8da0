"""Drift detection: pure statistics (``stats``), count aggregation (``aggregate``), reference
profiles (``profiles``) and the periodic evaluator (``evaluator``)."""
