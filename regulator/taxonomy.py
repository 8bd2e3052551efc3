"""The datapoints this project reads from EBA COREP and FFIEC Call Report instances, as data.

EU datapoints are named by COREP template/row/column (``C 01.00 r0020 c0010``). Real EBA xBRL-XML identifies a fact by
a metric (``eba_met:mi53``) plus dimension members in its context; the official DPM maps those combinations to
template cells. The metric/dimension pairs below are this project's small, illustrative stand-in for that mapping
(enough to parse and write consistent instances), not the official DPM: real filings need the EBA module tables
(e.g. from the ``eba-xbridge`` package) merged into ``EU_DATAPOINTS``.

US datapoints are flat MDRM concepts in the ``cc:`` namespace (``cc:RCOAP859``), exactly as in Call Report XBRL.
"""

from __future__ import annotations

from dataclasses import dataclass

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
    "eba_BA": "http://www.eba.europa.eu/xbrl/crr/dict/dom/BA",
    "eba_MC": "http://www.eba.europa.eu/xbrl/crr/dict/dom/MC",
    "eba_AP": "http://www.eba.europa.eu/xbrl/crr/dict/dom/AP",
    "cc": "http://www.ffiec.gov/xbrl/call/concepts",
}

EU_SCHEMA_REF = "http://www.eba.europa.eu/eu/fr/xbrl/crr/fws/corep/4.0/mod/corep_of.xsd"
US_SCHEMA_REF = "http://www.ffiec.gov/xbrl/call/concepts/FFIEC041/2024-12-31/call-report041-2024-12-31.xsd"
LEI_SCHEME = "http://standards.iso.org/iso/17442"
RSSD_SCHEME = "http://www.ffiec.gov/cdr"


@dataclass(frozen=True)
class Datapoint:
    """One fact the rules need: its code, a short label for the rendering, its kind and (EU) its XBRL identity."""

    code: str
    label: str
    kind: str
    metric: str = ""
    dims: tuple[tuple[str, str], ...] = ()


def _eu(code: str, label: str, kind: str, metric: str, mc: str) -> Datapoint:
    # Every EU datapoint here is qualified by a main-category member; together with the metric it is unique.
    return Datapoint(code, label, kind, metric, (("eba_dim:MCY", f"eba_MC:{mc}"),))


EU_DATAPOINTS: tuple[Datapoint, ...] = (
    _eu("C 01.00 r0010 c0010", "own funds", MONETARY, "mi53", "m10"),
    _eu("C 01.00 r0015 c0010", "T1", MONETARY, "mi53", "m11"),
    _eu("C 01.00 r0020 c0010", "CET1", MONETARY, "mi53", "m12"),
    _eu("C 02.00 r0010 c0010", "TREA", MONETARY, "mi158", "m20"),
    _eu("C 03.00 r0010 c0010", "CET1 ratio", RATIO, "pi364", "m30"),
    _eu("C 03.00 r0030 c0010", "T1 ratio", RATIO, "pi364", "m31"),
    _eu("C 03.00 r0050 c0010", "total ratio", RATIO, "pi364", "m32"),
    _eu("C 03.00 r0170 c0010", "CET1 buffer req", RATIO, "pi1010", "m33"),
    _eu("C 47.00 r0310 c0010", "LR exposure", MONETARY, "mi1002", "m41"),
    _eu("C 47.00 r0330 c0010", "leverage ratio", RATIO, "pi1003", "m42"),
    _eu("C 76.00 r0010 c0010", "HQLA", MONETARY, "mi2001", "m50"),
    _eu("C 76.00 r0020 c0010", "net outflows", MONETARY, "mi2002", "m51"),
    _eu("C 76.00 r0030 c0010", "LCR", RATIO, "pi2003", "m52"),
    _eu("C 84.00 r0220 c0010", "NSFR", RATIO, "pi2101", "m60"),
    _eu("C 28.00 r0010 c0322", "LE after CRM", MONETARY, "mi2201", "m70"),
    _eu("C 28.00 r0010 c0350", "LE % T1", RATIO, "pi2202", "m71"),
)
EU_NAME_DATAPOINT = _eu("C 00.01 r0005 c0010", "Entity name", TEXT, "si2300", "m01")

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
EU_BY_IDENTITY: dict[tuple[str, frozenset[tuple[str, str]]], Datapoint] = {
    (d.metric, frozenset(d.dims)): d for d in (*EU_DATAPOINTS, EU_NAME_DATAPOINT)
}
US_BY_CONCEPT: dict[str, Datapoint] = {d.code: d for d in (*US_DATAPOINTS, US_NAME_DATAPOINT)}
KIND: dict[str, str] = {code: d.kind for code, d in BY_CODE.items()}
