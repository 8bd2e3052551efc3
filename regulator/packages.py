"""Zip inputs: EBA xBRL-CSV report packages and bulk zips of XBRL instances (the FFIEC CDR's bulk download).

An xBRL-CSV report package (the EBA's reporting format from taxonomy 4.0 on) is a zip holding
``<top>/META-INF/reportPackage.json``, ``<top>/reports/report.json`` (its ``documentInfo.extends`` names the module,
e.g. ``.../corep/4.0/mod/corep_lr.json``), ``parameters.csv`` (``entityID``, ``refPeriod``, ``baseCurrency``),
``FilingIndicators.csv`` (``templateID,reported``) and one CSV per table (``c_47.00.csv``: ``datapoint,factValue``,
where ``dp<N>`` is the DPM VariableID; ``regulator/dpm_cells.json`` maps it to the cell). It reads to the same
``ParsedReport`` as the xBRL-XML form of the same report.

Every zip is read without extracting, member by member with a bounded read: at most ``MAX_MEMBERS`` members, each at
most ``MAX_BYTES`` (declared and actually read) and compressed at most ``MAX_RATIO`` : 1, so a zip bomb is refused
before it is inflated.
"""

from __future__ import annotations

import csv
import io
import json
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from finetune.errors import XBRLError
from regulator.taxonomy import BY_CODE, DPM_RELEASES, EU_DATAPOINTS, MONETARY, RATIO, SHARED_CELLS
from regulator.xbrl import (
    MAX_BYTES,
    ParsedReport,
    check_currency,
    corep_release,
    iso_date,
    parse_number,
    parse_xbrl_bytes,
    parse_xbrl_file,
    unreadable_datapoints,
)

MAX_MEMBERS = 20_000
MAX_RATIO = 200
ZIP_MAX_BYTES = 4 * 1024**3  # a CDR bulk zip of every bank's call report is ~1 GB; members are read one by one
XBRL_CSV = "https://xbrl.org/2021/xbrl-csv"
INSTANCE_SUFFIXES = (".xml", ".xbrl")
FILING_SUFFIXES = (*INSTANCE_SUFFIXES, ".zip")  # a zip: an xBRL-CSV report package or a bulk zip of instances

# "dp134660" -> cell code, for every release (DPM VariableIDs are stable across releases; checked when built).
DATAPOINT_CELLS: dict[str, str] = {
    entry["datapoint"]: code
    for cells in DPM_RELEASES.values() for code, entry in cells.items() if "datapoint" in entry
}


def is_report_package(names: list[str]) -> bool:
    """True when a zip's member names hold an xBRL report package (``META-INF/reportPackage.json``)."""
    return any(n.endswith("META-INF/reportPackage.json") for n in names)


def open_zip(path: Path, source: str) -> zipfile.ZipFile:
    """A zip, checked for its member count; ``XBRLError`` when it is not a readable zip."""
    if not path.is_file():  # a folder, a pipe, a device: never opened as a zip
        raise XBRLError(f"{source}: not a regular file")
    if path.stat().st_size > ZIP_MAX_BYTES:
        raise XBRLError(f"{source}: {path.stat().st_size:,} bytes, over the {ZIP_MAX_BYTES:,}-byte limit for a zip")
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise XBRLError(f"{source}: not a readable zip ({exc})") from None
    if len(zf.infolist()) > MAX_MEMBERS:
        raise XBRLError(f"{source}: {len(zf.infolist()):,} members, over the limit of {MAX_MEMBERS:,}")
    return zf


def read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, source: str) -> bytes:
    """One member's bytes, refusing what is too large or too compressed (declared or actual)."""
    where = f"{source}!{info.filename}"
    if info.file_size > MAX_BYTES:
        raise XBRLError(f"{where}: {info.file_size:,} bytes, over the {MAX_BYTES:,}-byte limit")
    if info.compress_size and info.file_size / info.compress_size > MAX_RATIO:
        raise XBRLError(f"{where}: compressed {info.file_size / info.compress_size:,.0f}:1, refused as a zip bomb")
    try:
        with zf.open(info) as member:
            data = member.read(MAX_BYTES + 1)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, RuntimeError, NotImplementedError) as exc:
        raise XBRLError(f"{where}: cannot be read from the zip ({exc})") from None
    if len(data) > MAX_BYTES:
        raise XBRLError(f"{where}: inflates past the {MAX_BYTES:,}-byte limit (its header understated its size)")
    return data


def find_filings(folder: Path) -> list[Path]:
    """The filings of a folder: ``*.xml``, ``*.xbrl`` and ``*.zip`` regular files, recursive, sorted."""
    return sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in FILING_SUFFIXES and p.is_file())


def read_filing_file(path: Path) -> list[ParsedReport | XBRLError]:
    """The filings of one file: an instance, or every filing of a zip (``read_zip``); a zip that cannot be opened
    at all raises ``XBRLError``."""
    return list(read_zip(path)) if path.suffix.lower() == ".zip" else [parse_xbrl_file(path)]


def read_zip(path: Path) -> Iterator[ParsedReport | XBRLError]:
    """The filings of a zip: one report for an xBRL-CSV package, one per instance for a bulk zip (an error per
    member that cannot be used, its ``source`` naming the member, so one bad member never hides the others)."""
    source = str(path)
    zf = open_zip(path, source)
    with zf:
        names = [i.filename for i in zf.infolist()]
        if is_report_package(names):
            yield parse_report_package(zf, source)
            return
        members = [i for i in zf.infolist() if not i.is_dir() and i.filename.lower().endswith(INSTANCE_SUFFIXES)]
        if not members:
            raise XBRLError(f"{source}: zip holds neither an xBRL-CSV report package nor *.xml / *.xbrl instances")
        for info in sorted(members, key=lambda i: i.filename):
            member = f"{source}!{info.filename}"
            try:
                yield parse_xbrl_bytes(read_member(zf, info, source), source=member)
            except XBRLError as exc:
                exc.source = member  # which filing of the zip the error belongs to
                yield exc


def _csv_rows(data: bytes, where: str) -> list[dict[str, str]]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise XBRLError(f"{where}: not UTF-8 text (byte {exc.start})") from None
    return list(csv.DictReader(io.StringIO(text)))


def parse_report_package(zf: zipfile.ZipFile, source: str) -> ParsedReport:
    """An EBA xBRL-CSV report package as a ``ParsedReport`` (``XBRLError`` naming the member that is wrong)."""
    infos = {i.filename: i for i in zf.infolist() if not i.is_dir()}
    report_json = next((n for n in infos if n.endswith("reports/report.json")), None)
    if report_json is None:
        raise XBRLError(f"{source}: report package without reports/report.json")
    folder = report_json[: -len("report.json")]
    try:
        report: dict[str, Any] = json.loads(read_member(zf, infos[report_json], source))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise XBRLError(f"{source}!{report_json}: not JSON ({exc})") from None
    info = report.get("documentInfo", {}) if isinstance(report, dict) else {}
    if info.get("documentType") != XBRL_CSV:
        raise XBRLError(f"{source}!{report_json}: documentType {info.get('documentType')!r}, not {XBRL_CSV}")
    extends = " ".join(str(e) for e in info.get("extends", []))
    if "eba.europa.eu" not in extends or "/corep/" not in extends:
        raise XBRLError(f"{source}: unsupported taxonomy ({extends or 'no documentInfo.extends'}); supported: EBA "
                        "COREP (eba.europa.eu .../corep/...)")
    release = corep_release(extends)

    def rows(name: str) -> list[dict[str, str]]:
        member = infos.get(folder + name)
        if member is None:
            raise XBRLError(f"{source}: report package without {folder}{name}")
        return _csv_rows(read_member(zf, member, source), f"{source}!{folder}{name}")

    params = {r.get("name", ""): (r.get("value") or "").strip() for r in rows("parameters.csv")}
    report_date = iso_date(params.get("refPeriod"), "parameters.csv refPeriod", source)
    if report_date is None:
        raise XBRLError(f"{source}: parameters.csv has no refPeriod, so no report date")
    entity = params.get("entityID", "").partition(":")[2] or params.get("entityID", "")
    entity = entity.removesuffix(".CON").removesuffix(".IND")
    filed = {r.get("templateID", "").strip() for r in rows("FilingIndicators.csv")
             if (r.get("reported") or "true").strip().lower() != "false"}
    currency = params.get("baseCurrency", "").rpartition(":")[2] or "EUR"
    warnings: list[str] = []
    facts: dict[str, float | None] = {}
    units: dict[str, str] = {}
    for name, member in sorted(infos.items()):
        if not name.startswith(folder) or not name.endswith(".csv") or name[len(folder):] in (
                "parameters.csv", "FilingIndicators.csv"):
            continue
        for row in _csv_rows(read_member(zf, member, source), f"{source}!{name}"):
            code = DATAPOINT_CELLS.get((row.get("datapoint") or "").strip())
            if code is None or set(row) - {"datapoint", "factValue", "unit"}:
                continue  # rows with key columns (a currency, a counterparty) are not the fixed cell of the rules
            if row.get("unit") and not str(row["unit"]).endswith(("EUR", "pure")):
                warnings.append(f"{code} reported in {row['unit']}; read as reported")
            value = parse_number(row.get("factValue") or "", code, warnings)
            if code in facts and facts[code] != value:
                warnings.append(f"{code} reported twice with different values; kept the first ({facts[code]})")
                continue
            facts[code] = value
            kind = BY_CODE[code].kind
            units[code] = f"iso4217:{currency}" if kind == MONETARY else "xbrli:pure" if kind == RATIO else ""
    checked = check_currency(facts, units, "EU", warnings)
    unreadable = unreadable_datapoints(filed, release, facts, warnings)
    return ParsedReport(
        source=source, jurisdiction="EU", form="COREP", entity_id=entity, entity_name=entity,
        report_date=report_date, currency=checked, facts=facts, units=units, warnings=tuple(warnings),
        unreadable=unreadable, release=release,
    )


def filing_scope(templates: Iterable[str] | None) -> tuple[list[str], set[str]]:
    """The filing-indicator ids (``C_47.00``) and the cell codes a submission of ``templates`` (``C 47.00``; None:
    every template of EU_DATAPOINTS) carries: its templates' cells and the cells they share (SHARED_CELLS)."""
    names = {dp.code[:7] for dp in EU_DATAPOINTS} if templates is None else set(templates)
    cells = {dp.code for dp in EU_DATAPOINTS if dp.code[:7] in names}
    cells |= {code for t in names for code in SHARED_CELLS.get(t, ())}
    return sorted(t.replace(" ", "_") for t in names), cells


def write_report_package(lei: str, report_date: str, figures: dict[str, float | None], *,
                         module: str = "corep_of", release: str = "4.0",
                         templates: Iterable[str] | None = None) -> bytes:
    """The xBRL-CSV report package of ``figures`` (cell code -> value; None is left out, as xBRL-CSV has no nil):
    what an EBA reporter files from taxonomy 4.0 on. Cells without a DPM datapoint are left out. ``templates``
    (e.g. ``["C 47.00"]``, a module-wise submission) limits the filing indicators and the cells to those templates;
    None files every template."""
    indicators, filed = filing_scope(templates)
    cells = DPM_RELEASES[release]
    tables: dict[str, list[str]] = {}
    for code, value in figures.items():
        entry = cells.get(code, {})
        if value is None or "datapoint" not in entry or code not in filed:
            continue
        table = entry["table"].split(" ")[0].lower()
        text = f"{value:.4f}" if BY_CODE[code].kind == RATIO else f"{value:.0f}"
        tables.setdefault(table, []).append(f"{entry['datapoint']},{text}")
    top = f"{lei}.CON_FR_{module.upper()}_{report_date}"
    report = {"documentInfo": {"documentType": XBRL_CSV, "extends": [
        f"http://www.eba.europa.eu/eu/fr/xbrl/crr/fws/corep/{release}/mod/{module}.json"]}}
    members = {
        f"{top}/META-INF/reportPackage.json": json.dumps(
            {"documentInfo": {"documentType": "https://xbrl.org/report-package/2023"}}),
        f"{top}/reports/report.json": json.dumps(report),
        f"{top}/reports/parameters.csv": "name,value\r\n" f"entityID,lei:{lei}.CON\r\nrefPeriod,{report_date}\r\n"
                                         "baseCurrency,iso4217:EUR\r\ndecimalsInteger,0\r\ndecimalsMonetary,-3\r\n"
                                         "decimalsPercentage,4\r\n",
        f"{top}/reports/FilingIndicators.csv": "templateID,reported\r\n" + "".join(
            f"{t},true\r\n" for t in indicators),
        **{f"{top}/reports/{table}.csv": "datapoint,factValue\r\n" + "".join(f"{r}\r\n" for r in sorted(rows))
           for table, rows in tables.items()},
    }
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, text in members.items():
            zf.writestr(name, text)
    return buffer.getvalue()
