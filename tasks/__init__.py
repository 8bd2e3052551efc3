"""Prefect tasks: one per stage of the finetune flow. Thin: the work happens in the plain libraries."""
