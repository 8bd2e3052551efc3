"""Real-derived filings: a real Call Report with its capital changed consistently, so its structure stays real
(the bank's form, election, items filed and left out) and the answer is known (the rule engine labels it).

Every capital amount and every capital ratio is scaled by one factor: CET1, Tier 1 and total capital with the
ratios built on them (RC-R's RCOA/RCFA/RCFW items), so components and ratios still agree and only the distance to
each minimum moves. A factor of 0.3 takes a bank with a 12% CET1 ratio to 3.6%: every risk-based minimum and the
leverage minimum breached; a CBLR elector's leverage ratio of 12.4% at 0.7 is 8.7%, under the 9% of the framework.

``complete_extract`` gives a trimmed extract the two RC-R items it leaves out, derived from what it files, so every
rule in force can be assessed on a real structure: the leverage ratio's total assets (item A224 = Tier 1 capital /
leverage ratio) and, for a bank on the risk-based framework, the capital conservation buffer (item H311 = the lowest
of CET1 - 4.5%, Tier 1 - 6% and total capital - 8%, 12 CFR 324.11(a)(4)(ii)). The figures are the bank's, the two
items are arithmetic on them: a compliant bank stays compliant, and the answer is known.
"""

from __future__ import annotations

import re

from regulator.xbrl import BUFFER_OVER

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


# The ratios (MDRM item, minimum) the conservation buffer is the lowest headroom over (12 CFR 324.11(a)(4)(ii)), as
# the parser reads it.
_BUFFER_OVER = tuple((code[4:], minimum) for code, minimum in BUFFER_OVER["RCOAH311"])


def _fact(instance: str, items: tuple[str, ...]) -> re.Match | None:
    """The first fact of ``instance`` named one of ``items`` (local names, any RC-R prefix): its start tag, text and
    end tag as groups 1-3, its local name as group ``local``."""
    names = "|".join(f"{p}{i}" for p in _PREFIXES for i in items)
    return re.search(rf"(<(?:\w+:)?(?P<local>{names})\b[^>]*>)([^<]+)(</(?:\w+:)?(?P=local)>)", instance)


def _beside(instance: str, template: re.Match, local: str, value: str) -> str:
    """``instance`` with a fact named ``local`` added after ``template``'s, in its namespace, context and unit."""
    start = template.group(1).replace(template.group("local"), local, 1)
    end = template.group(4).replace(template.group("local"), local, 1)
    return instance[:template.end()] + f"{start}{value}{end}" + instance[template.end():]


def complete_extract(instance: str) -> str:
    """A trimmed FFIEC extract (XML text) with RC-R's leverage total assets (A224) and, on the risk-based framework,
    the conservation buffer (H311) added where it leaves them out, derived from the figures it files (see above)."""
    tier1, leverage = _fact(instance, ("8274",)), _fact(instance, ("7204",))
    if tier1 is None or leverage is None or not float(leverage.group(3)):
        raise ValueError("no Tier 1 capital (8274) or leverage ratio (7204) to derive the leverage assets from")
    prefix = tier1.group("local")[:4]
    out = instance
    if _fact(out, ("A224",)) is None:
        assets = float(tier1.group(3)) / float(leverage.group(3))
        out = _beside(out, tier1, f"{prefix}A224", str(int(round(assets, -3))))
    ratios = [(_fact(out, (item,)), minimum) for item, minimum in _BUFFER_OVER]
    if _fact(out, ("H311",)) is None and all(fact is not None for fact, _ in ratios):
        buffer = min(float(fact.group(3)) - minimum for fact, minimum in ratios)
        template = _fact(out, ("7204",))
        out = _beside(out, template, f"{template.group('local')[:4]}H311", f"{buffer:.6f}")
    return out
