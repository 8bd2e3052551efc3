"""The floor every layer stands on: standard-library-only helpers with no project import.

``errors`` (the project's exception types), ``paths`` (where things live), ``hashing`` (content hashes),
``memory_reuse`` (glibc malloc settings for training and generation), ``codegraph`` (the project modules a module
runs, for cache keys). Everything above may import these; they import nothing of the project (tests/test_layering.py).
"""
