"""Benchmarks: each module has ``run() -> dict`` of figures and ratios measured in one run.

Run all or some with ``python -m bench [NAME ...]``; results go to ``bench/results/<name>.json``.
"""
