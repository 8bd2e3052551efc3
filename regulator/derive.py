"""Real-derived filings: a real Call Report with its capital changed consistently, so its structure stays real
(the bank's form, election, items filed and left out) and the answer is known (the rule engine labels it).

Every capital amount and every capital ratio is scaled by one factor: CET1, Tier 1 and total capital with the
ratios built on them (RC-R's RCOA/RCFA/RCFW items), so components and ratios still agree and only the distance to
each minimum moves. A factor of 0.3 takes a bank with a 12% CET1 ratio to 3.6%: every risk-based minimum and the
leverage minimum breached; a CBLR elector's leverage ratio of 12.4% at 0.7 is 8.7%, under the 9% of the framework.
"""

from __future__ import annotations

import re

# RC-R Part I items that move with capital (amounts and the ratios on them); assets and RWA stay as filed.
CAPITAL_AMOUNTS = ("P859", "8274", "3792")  # CET1, Tier 1, total capital
CAPITAL_RATIOS = ("P793", "7206", "7205", "7204")  # CET1, Tier 1, total capital ratios, leverage ratio
_PREFIXES = ("RCOA", "RCFA", "RCFW")


def _scaled(value: str, factor: float, decimals: str | None) -> str:
    """A fact's text scaled by ``factor``, written with the precision the fact declares."""
    number = float(value) * factor
    places = int(decimals) if decimals and decimals.lstrip("-").isdigit() and int(decimals) > 0 else 0
    return f"{number:.{places}f}" if places else str(int(round(number)))


def scale_capital(instance: str, factor: float) -> str:
    """An FFIEC Call Report instance (XML text) with its capital amounts and ratios scaled by ``factor``."""
    if not 0 < factor < 10:
        raise ValueError(f"factor {factor} is not a plausible scaling of capital (0 < factor < 10)")
    items = "|".join(f"{p}{i}" for p in _PREFIXES for i in CAPITAL_AMOUNTS + CAPITAL_RATIOS)
    fact = re.compile(rf"(<(?:\w+:)?(?:{items})\b[^>]*>)([^<]+)(</)")

    def replace(m: re.Match) -> str:
        decimals = re.search(r'decimals="([^"]*)"', m.group(1))
        return f"{m.group(1)}{_scaled(m.group(2).strip(), factor, decimals and decimals.group(1))}{m.group(3)}"

    out, count = fact.subn(replace, instance)
    if not count:
        raise ValueError("no capital item (RC-R CET1, Tier 1, total capital or their ratios) in this instance")
    return out
