"""Prefect flows: ``finetune`` wires the stages."""
