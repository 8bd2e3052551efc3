"""Evaluation: batched generation, answer parsing, metrics, forgetting, report tables and plots, gate criteria."""
