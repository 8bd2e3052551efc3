"""The datapoints this project reads from EBA COREP and FFIEC Call Report instances, as data.

EU datapoints are named by COREP template/row/column (``C 47.00 r0330 c0010``). EBA xBRL-XML identifies a fact by a
metric (``eba_met:qIHM``) plus dimension members in its context (``eba_dim_4.0:qADT = eba_qOR:qx2060``); which
combination makes which cell is defined by the EBA data point model (DPM) and differs between taxonomy releases
(3.x uses ``mi``/``pi`` metrics with ``BAS``/``MCY`` dimensions, 4.0 the DPM 2.0 ``q`` codes). ``dpm_cells.json``
holds that mapping for the cells the rules read, generated from the EBA DPM 2.0 database by
``scripts/dpm_mapping.py`` (releases 3.4, 3.5 and 4.0). Identities are compared as (dimension local name,
``DOMAIN:member``) pairs resolved through the instance's namespaces, never by prefix.

Cells the DPM does not give a fixed identity (C 28.00 is an open table, one row per counterparty) keep a
project-defined stand-in identity (member codes ``m..``, which no real filing uses): generated filings carry them,
real filings are reported as "not mapped" for them.

US datapoints are flat MDRM concepts in the ``cc:`` namespace (``cc:RCOAP859``), exactly as in Call Report XBRL.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MONETARY = "monetary"
RATIO = "ratio"
TEXT = "text"

NS = {
    "xbrli": "http://www.xbrl.org/2003/instance",
    "link": "http://www.xbrl.org/2003/linkbase",
    "xlink": "http://www.w3.org/1999/xlink",
    "xbrldi": "http://xbrl.org/2006/xbrldi",
    "iso4217": "http://www.xbrl.org/2003/iso4217",
    "xsi": "http://www.w3.org/2001/XMLSchema-instance",
    "find": "http://www.eurofiling.info/xbrl/ext/filing-indicators",
    "eba_met": "http://www.eba.europa.eu/xbrl/crr/dict/met",
    "eba_dim": "http://www.eba.europa.eu/xbrl/crr/dict/dim",
    "eba_dim_4.0": "http://www.eba.europa.eu/xbrl/crr/dict/dim/4.0",
    "cc": "http://www.ffiec.gov/xbrl/call/concepts",
}

EU_SCHEMA_REF = "http://www.eba.europa.eu/eu/fr/xbrl/crr/fws/corep/4.0/mod/corep_of.xsd"
LEI_SCHEME = "http://standards.iso.org/iso/17442"
RSSD_SCHEME = "http://www.ffiec.gov/cdr"


@dataclass(frozen=True)
class Datapoint:
    """One fact the rules need: its code, a short label for the rendering, its kind and (EU) its XBRL identity:
    the metric's local name, (dimension local name, ``DOMAIN:member``) pairs, and the DPM release the identity
    comes from (``stand-in`` for the project's own)."""

    code: str
    label: str
    kind: str
    metric: str = ""
    dims: tuple[tuple[str, str], ...] = ()
    release: str = ""


DPM_FILE = Path(__file__).with_name("dpm_cells.json")
DPM: dict[str, Any] = json.loads(DPM_FILE.read_text())
DPM_RELEASES: dict[str, dict[str, dict[str, Any]]] = DPM["releases"]
GENERATOR_RELEASE = "4.0"  # the release the generator writes (EU_SCHEMA_REF)
EBA_BASE = "http://www.eba.europa.eu/xbrl/crr/dict/"


def dimension_namespace(release: str) -> str:
    """The namespace of a release's dimensions: the DPM 2.0 refit (4.0) put its q-dimensions under dim/4.0."""
    return NS["eba_dim_4.0"] if release == "4.0" else NS["eba_dim"]


def member_key(signature: str) -> str:
    """``eba_qOR:qx2060`` -> ``qOR:qx2060``; ``eba_BA:x11`` -> ``BA:x11`` (the domain and the member's local name)."""
    prefix, _, local = signature.partition(":")
    return f"{prefix.removeprefix('eba_')}:{local}"


def dimension_key(signature: str) -> str:
    """``eba:BAS`` -> ``BAS``; ``qADT`` -> ``qADT`` (a dimension's local name)."""
    return signature.rpartition(":")[2]


def _identity(entry: dict[str, Any]) -> tuple[str, tuple[tuple[str, str], ...]]:
    return entry["metric"], tuple(sorted((dimension_key(d), member_key(m)) for d, m in entry["dims"]))


def _eu(code: str, label: str, kind: str, stand_in: tuple[str, str] | None = None) -> Datapoint:
    """An EU datapoint with the identity the generator writes: the DPM's for the generator's release, else the
    latest release that maps it, else the project's stand-in (metric, main-category member)."""
    for release in (GENERATOR_RELEASE, *sorted(DPM_RELEASES, reverse=True)):
        entry = DPM_RELEASES[release].get(code, {})
        if "metric" in entry:
            metric, dims = _identity(entry)
            return Datapoint(code, label, kind, metric, dims, release)
    if stand_in is None:
        raise KeyError(f"{code} is in no release of {DPM_FILE.name} and has no stand-in identity")
    metric, member = stand_in
    return Datapoint(code, label, kind, metric, (("MCY", f"MC:{member}"),), "stand-in")


EU_DATAPOINTS: tuple[Datapoint, ...] = (
    _eu("C 01.00 r0010 c0010", "own funds", MONETARY),
    _eu("C 01.00 r0015 c0010", "T1", MONETARY),
    _eu("C 01.00 r0020 c0010", "CET1", MONETARY),
    _eu("C 02.00 r0010 c0010", "TREA", MONETARY),
    _eu("C 03.00 r0010 c0010", "CET1 ratio", RATIO),
    _eu("C 03.00 r0030 c0010", "T1 ratio", RATIO),
    _eu("C 03.00 r0050 c0010", "total ratio", RATIO),
    _eu("C 03.00 r0170 c0010", "CET1 buffer req", RATIO),
    _eu("C 47.00 r0290 c0010", "LR exposure", MONETARY),
    _eu("C 47.00 r0310 c0010", "LR T1", MONETARY),
    _eu("C 47.00 r0330 c0010", "leverage ratio", RATIO),
    _eu("C 76.00 r0010 c0010", "HQLA", MONETARY),
    _eu("C 76.00 r0020 c0010", "net outflows", MONETARY),
    _eu("C 76.00 r0030 c0010", "LCR", RATIO),
    _eu("C 84.00 r0220 c0040", "NSFR", RATIO),
    _eu("C 28.00 r0010 c0322", "LE after CRM", MONETARY, ("mi2201", "m70")),
    _eu("C 28.00 r0010 c0350", "LE % T1", RATIO, ("pi2202", "m71")),
)
# EBA COREP is filed module by module, one instance (or report package) per module, each with the filing indicators
# of its templates: the templates of EU_DATAPOINTS that each module carries (its other templates are not modelled).
COREP_MODULES: dict[str, tuple[str, ...]] = {
    "corep_of": ("C 01.00", "C 02.00", "C 03.00"),  # own funds and capital ratios
    "corep_lr": ("C 47.00",),  # leverage ratio
    "corep_lcr_da": ("C 76.00",),  # liquidity coverage (delegated act)
    "corep_nsfr": ("C 84.00",),  # net stable funding ratio
    "corep_le": ("C 28.00",),  # large exposures
}
# Cells a template reports under another template's DPM datapoint: C 47.00 r0320 (Tier 1, transitional) is the
# datapoint of C 01.00 r0015, so a leverage-only submission carries it (as the EBA's 4.0 leverage sample does).
SHARED_CELLS: dict[str, tuple[str, ...]] = {"C 47.00": ("C 01.00 r0015 c0010",)}
EU_NAME_DATAPOINT = _eu("C 00.01 r0005 c0010", "Entity name", TEXT, ("si2300", "m01"))


def _by_identity(release: str | None) -> dict[tuple[str, frozenset[tuple[str, str]]], Datapoint]:
    """(metric, dims) -> datapoint for one release's DPM identities (None: every release), plus the stand-ins."""
    by_code = {d.code: d for d in (*EU_DATAPOINTS, EU_NAME_DATAPOINT)}
    out = {(d.metric, frozenset(d.dims)): d for d in by_code.values()}  # what the generator writes
    for name in ([release] if release else sorted(DPM_RELEASES)):
        for code, entry in DPM_RELEASES[name].items():
            if "metric" in entry and code in by_code:
                metric, dims = _identity(entry)
                out[(metric, frozenset(dims))] = by_code[code]
    return out


EU_BY_IDENTITY: dict[str | None, dict[tuple[str, frozenset[tuple[str, str]]], Datapoint]] = {
    release: _by_identity(release) for release in (*DPM_RELEASES, None)
}


def not_mapped(release: str | None) -> dict[str, str]:
    """Cell code -> why the DPM mapping has no identity for it in ``release`` (every cell when the release is not
    in the mapping)."""
    if release == "3.x":  # a pre-4.0 module named by its ITS and date: the latest 3.x release of the mapping
        release = max(r for r in DPM_RELEASES if r.startswith("3."))
    if release not in DPM_RELEASES:
        known = ", ".join(DPM_RELEASES)
        return {d.code: f"taxonomy corep {release or '?'} is not in the DPM mapping ({known})" for d in EU_DATAPOINTS}
    return {code: entry["not_mapped"] for code, entry in DPM_RELEASES[release].items() if "not_mapped" in entry}


US_DATAPOINTS: tuple[Datapoint, ...] = (
    Datapoint("RCOAP859", "CET1", MONETARY),
    Datapoint("RCOA8274", "T1", MONETARY),
    Datapoint("RCOA3792", "total capital", MONETARY),
    Datapoint("RCOAA223", "RWA", MONETARY),
    Datapoint("RCOAA224", "leverage assets", MONETARY),
    Datapoint("RCON2170", "total assets", MONETARY),
    Datapoint("RCOAP793", "CET1 ratio", RATIO),
    Datapoint("RCOA7206", "T1 ratio", RATIO),
    Datapoint("RCOA7205", "total ratio", RATIO),
    Datapoint("RCOA7204", "leverage ratio", RATIO),
    Datapoint("RCOAH311", "conservation buffer", RATIO),
)
US_NAME_DATAPOINT = Datapoint("RSSD9017", "Entity name", TEXT)

DATAPOINTS: dict[str, tuple[Datapoint, ...]] = {"EU": EU_DATAPOINTS, "US": US_DATAPOINTS}
BY_CODE: dict[str, Datapoint] = {d.code: d for d in (*EU_DATAPOINTS, *US_DATAPOINTS)}
US_BY_CONCEPT: dict[str, Datapoint] = {d.code: d for d in (*US_DATAPOINTS, US_NAME_DATAPOINT)}
KIND: dict[str, str] = {code: d.kind for code, d in BY_CODE.items()}

# A ratio's components (numerator, denominator), as the rule table's data-quality checks read them
# (tests/test_bad_filings_sweep.py checks this against regulator.rules.RULES). A ratio filed with its components is
# judged against them by those checks (which name a x100 scale error); the parser's unit plausibility is for the rest.
RATIO_COMPONENTS: dict[str, tuple[str, str]] = {
    "C 03.00 r0010 c0010": ("C 01.00 r0020 c0010", "C 02.00 r0010 c0010"),
    "C 03.00 r0030 c0010": ("C 01.00 r0015 c0010", "C 02.00 r0010 c0010"),
    "C 03.00 r0050 c0010": ("C 01.00 r0010 c0010", "C 02.00 r0010 c0010"),
    "C 47.00 r0330 c0010": ("C 47.00 r0310 c0010", "C 47.00 r0290 c0010"),
    "C 76.00 r0030 c0010": ("C 76.00 r0010 c0010", "C 76.00 r0020 c0010"),
    "C 28.00 r0010 c0350": ("C 28.00 r0010 c0322", "C 01.00 r0015 c0010"),
    "RCOAP793": ("RCOAP859", "RCOAA223"),
    "RCOA7206": ("RCOA8274", "RCOAA223"),
    "RCOA7205": ("RCOA3792", "RCOAA223"),
    "RCOA7204": ("RCOA8274", "RCOAA224"),
}
# The unit of a ratio fact, decided by plausibility (ratios are decimals in CDR and EBA instances, 0.1084 = 10.84%,
# but percents occur in practice: the xbridge LCR sample carries 68.41). Per ratio datapoint: (the largest magnitude
# read as a decimal without doubt, the magnitude above which no decimal ratio of it is plausible, so it is a percent).
# Between the two the unit cannot be decided: read as a decimal, with a warning.
_CAPITAL_RATIO_BOUNDS = (1.0, 3.0)  # 100% of RWA / exposure; a percent of 3 or less would be a failed bank
RATIO_UNIT_BOUNDS: dict[str, tuple[float, float]] = {
    **{code: _CAPITAL_RATIO_BOUNDS for code in (
        "C 03.00 r0010 c0010", "C 03.00 r0030 c0010", "C 03.00 r0050 c0010", "C 47.00 r0330 c0010",
        "C 28.00 r0010 c0350", "RCOAP793", "RCOA7206", "RCOA7205", "RCOA7204")},
    "C 03.00 r0170 c0010": (0.5, 0.5),  # a CET1 requirement is 4.5% plus buffers (7-20%), never half the RWA
    "RCOAH311": (1.0, 1.0),  # the conservation buffer: CET1 ratio above its minimum, in decimals
    "C 76.00 r0030 c0010": (5.0, 20.0),  # LCR: 100-500% usual; a percent LCR under 20% is a run on the bank
    "C 84.00 r0220 c0040": (3.0, 10.0),  # NSFR: 100-200% usual
}
# No ratio is filed nonzero below this (a ratio has four decimals at most: 0.0001); smaller is a scale error.
RATIO_MIN = 1e-6
# Amounts (currency units) a filing can hold: below one unit (a denormal 1e-320, a negative scale) or above a
# quadrillion (the largest banks report a few trillion) is a broken figure, not a bank's.
AMOUNT_MIN, AMOUNT_MAX = 1.0, 1e15
