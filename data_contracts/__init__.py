"""Data contracts (Great Expectations) and the data-preparation logic they guard. Never imports Prefect."""

from data_contracts.contracts import ContractLimits, ContractResult, validate_raw, validate_splits

__all__ = ["ContractLimits", "ContractResult", "validate_raw", "validate_splits"]
