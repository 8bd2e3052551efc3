"""Regulator domain: XBRL parsing, the prudential rule engine (label oracle), synthetic reports, prompts and targets.

Plain Python; never imports Prefect.
"""
