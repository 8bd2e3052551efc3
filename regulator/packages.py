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
import os
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from foundation.errors import XBRLError
from regulator.bulk import is_bulk_schedule, read_bulk_schedule
from regulator.taxonomy import BY_CODE, DPM_RELEASES, EU_DATAPOINTS, MONETARY, RATIO, SHARED_CELLS
from regulator.xbrl import (
    MAX_BYTES,
    ZIP_MAGIC,
    ParsedReport,
    check_currency,
    check_entity_id,
    check_report_date,
    corep_release,
    iso_date,
    normalise_ratios,
    parse_number,
    parse_xbrl_bytes,
    parse_xbrl_file,
    plausible_amount,
    unreadable_datapoints,
)

MAX_MEMBERS = 20_000
MAX_RATIO = 200
ZIP_MAX_BYTES = 4 * 1024**3  # a CDR bulk zip of every bank's call report is ~1 GB; members are read one by one
XBRL_CSV = "https://xbrl.org/2021/xbrl-csv"
INSTANCE_SUFFIXES = (".xml", ".xbrl")
FILING_SUFFIXES = (*INSTANCE_SUFFIXES, ".zip")  # a zip: an xBRL-CSV report package or a bulk zip of instances
PACKAGE_MARKER = "META-INF/reportPackage.json"
# The columns each CSV of a report package must have (a table's rows: the DPM datapoint and its value).
PARAMETERS_COLUMNS, INDICATOR_COLUMNS, TABLE_COLUMNS = ("name", "value"), ("templateID",), ("datapoint", "factValue")

# "dp134660" -> cell code, for every release (DPM VariableIDs are stable across releases; checked when built).
DATAPOINT_CELLS: dict[str, str] = {
    entry["datapoint"]: code
    for cells in DPM_RELEASES.values() for code, entry in cells.items() if "datapoint" in entry
}


def is_report_package(names: list[str]) -> bool:
    """True when a zip's member names hold an xBRL report package (``META-INF/reportPackage.json``)."""
    return bool(package_roots(names))


def package_roots(names: list[str]) -> list[str]:
    """The top folders (``pkg/``, or ``""`` at the zip's root) of every xBRL report package among a zip's member
    names, sorted."""
    return sorted({n[: -len(PACKAGE_MARKER)] for n in names if n == PACKAGE_MARKER or n.endswith("/" + PACKAGE_MARKER)})


def is_system_member(name: str) -> bool:
    """A zip member that is no filing: macOS Finder's ``__MACOSX/`` folder and ``._*`` AppleDouble resource forks."""
    return name.startswith("__MACOSX/") or name.rpartition("/")[2].startswith("._")


def starts_like_zip(path: Path) -> bool:
    """True when a regular file begins with a zip signature (``PK\\x03\\x04``), whatever its name says."""
    try:
        if not path.is_file():
            return False
        with path.open("rb") as fh:
            return fh.read(4) in ZIP_MAGIC
    except OSError:
        return False


def open_zip(path: Path, source: str) -> zipfile.ZipFile:
    """A zip, checked for its member count; ``XBRLError`` when it is not a readable zip."""
    if not path.is_file():  # a folder, a pipe, a device: never opened as a zip
        raise XBRLError(f"{source}: not a regular file")
    if path.stat().st_size > ZIP_MAX_BYTES:
        raise XBRLError(f"{source}: {path.stat().st_size:,} bytes, over the {ZIP_MAX_BYTES:,}-byte limit for a zip")
    return _checked_zip(path, source)


def _checked_zip(file: Path | io.BytesIO, source: str) -> zipfile.ZipFile:
    """``file`` opened as a zip with at most ``MAX_MEMBERS`` members; ``XBRLError`` naming ``source`` otherwise."""
    try:
        zf = zipfile.ZipFile(file)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise XBRLError(f"{source}: not a readable zip ({exc})") from None
    if len(zf.infolist()) > MAX_MEMBERS:
        zf.close()
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
    """The filings of a folder: ``*.xml``, ``*.xbrl`` and ``*.zip`` entries, recursive, sorted (``scan_filings``
    without the entries it could not search)."""
    return scan_filings(folder)[0]


def scan_filings(folder: Path) -> tuple[list[Path], list[tuple[Path, str]]]:
    """The filings of a folder and what its search skipped, each with why, both sorted.

    Filings are the ``*.xml``, ``*.xbrl`` and ``*.zip`` entries and the FFIEC CDR bulk RC-R schedules
    (``regulator.bulk``) that are not folders, recursive; one that is not a
    regular file (a pipe, a device, a dangling link) is kept, so that its reader names the problem. Skipped: every
    folder that cannot be read (``permission denied``) and every symbolic link to a folder, which is not followed
    (it may lead anywhere, or back into the tree): the caller reports them, never skips them silently.
    """
    skipped: list[tuple[Path, str]] = []

    def unreadable(exc: OSError) -> None:
        why = (exc.strerror or str(exc)).lower()
        skipped.append((Path(exc.filename or folder), f"cannot read the folder ({why})"))

    files: list[Path] = []
    for root, dirs, names in os.walk(folder, onerror=unreadable):
        for name in dirs:
            if os.path.islink(link := os.path.join(root, name)):
                skipped.append((Path(link), f"a symbolic link to a folder ({os.readlink(link)}), not followed; "
                                            "pass that folder itself to read it"))
        files.extend(Path(root, name) for name in names
                     if Path(name).suffix.lower() in FILING_SUFFIXES or is_bulk_schedule(Path(name)))
    return sorted(files), sorted(skipped)


def read_filing_file(path: Path) -> list[ParsedReport | XBRLError]:
    """The filings of one file: an instance, every filing of a zip (``read_zip``; also a zip named ``.xml``,
    known by its signature) or every bank of an FFIEC CDR bulk schedule (``regulator.bulk``); a zip or schedule that
    cannot be read at all raises ``XBRLError``."""
    path = Path(path)
    if is_bulk_schedule(path):
        return read_bulk_schedule(path)
    return list(read_zip(path)) if path.suffix.lower() == ".zip" or starts_like_zip(path) else [parse_xbrl_file(path)]


def read_zip(path: Path) -> Iterator[ParsedReport | XBRLError]:
    """The filings of a zip: one report per xBRL-CSV package, one per instance of a bulk zip, and those of each zip
    inside it (one level deep); an error per member that cannot be used, its ``source`` naming the member, so one
    bad member never hides the others. A zip that is one package and nothing else raises its package's error."""
    source = str(path)
    zf = open_zip(path, source)
    with zf:
        yield from zip_filings(zf, source)


def zip_filings(zf: zipfile.ZipFile, source: str, depth: int = 0) -> Iterator[ParsedReport | XBRLError]:
    """The filings of an open zip (``read_zip``); ``depth`` 1 for a zip inside a zip, whose own zips are not read.
    macOS ``__MACOSX/`` and ``._*`` members are skipped."""
    infos = [i for i in zf.infolist() if not i.is_dir() and not is_system_member(i.filename)]
    roots = package_roots([i.filename for i in infos])
    loose = [i for i in infos if not any(i.filename.startswith(r) for r in roots)
             and i.filename.lower().endswith((*INSTANCE_SUFFIXES, ".zip"))]
    if not roots and not loose:
        raise XBRLError(f"{source}: zip holds neither an xBRL-CSV report package nor *.xml / *.xbrl instances")
    if len(roots) == 1 and not loose:
        yield parse_report_package(zf, source, roots[0])
        return
    for root in roots:  # several packages: each is a filing, named by its top folder
        yield _or_error(lambda: replace(parse_report_package(zf, source, root), source=f"{source}!{root}"),
                        f"{source}!{root}")
    for info in sorted(loose, key=lambda i: i.filename):
        member = f"{source}!{info.filename}"
        if not info.filename.lower().endswith(".zip"):
            yield _or_error(lambda: parse_xbrl_bytes(read_member(zf, info, source), source=member), member)
        elif depth:
            nested = XBRLError(f"{member}: a zip inside a zip inside a zip; only one level of nesting is read, "
                               "unpack it")
            nested.source = member
            yield nested
        else:
            yield from _nested_zip(zf, info, source)


def _nested_zip(zf: zipfile.ZipFile, info: zipfile.ZipInfo, source: str) -> Iterator[ParsedReport | XBRLError]:
    """The filings of a zip inside a zip (read in memory under the same member limits), or its error."""
    member = f"{source}!{info.filename}"
    try:
        with _checked_zip(io.BytesIO(read_member(zf, info, source)), member) as inner:
            yield from zip_filings(inner, member, depth=1)
    except XBRLError as exc:
        exc.source = getattr(exc, "source", None) or member
        yield exc


def _or_error(read: Callable[[], ParsedReport], member: str) -> ParsedReport | XBRLError:
    """``read()``, or its ``XBRLError`` with ``source`` naming the member it belongs to."""
    try:
        return read()
    except XBRLError as exc:
        exc.source = member  # which filing of the zip the error belongs to
        return exc


def _csv_rows(data: bytes, where: str, columns: tuple[str, ...]) -> list[dict[str, str]]:
    """The rows of a package CSV; ``XBRLError`` naming ``where`` and its header when it lacks one of ``columns``."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise XBRLError(f"{where}: not UTF-8 text (byte {exc.start})") from None
    reader = csv.DictReader(io.StringIO(text))
    header = reader.fieldnames or []
    missing = [c for c in columns if c not in header]
    if missing:
        raise XBRLError(f"{where}: header {','.join(header)[:80] or '(none)'!r} lacks column(s) {', '.join(missing)}; "
                        f"expected {','.join(columns)}")
    return list(reader)


def _json_kind(value: object) -> str:
    """How an error names a JSON value's type: ``a string 'x'``, ``a number``, ``missing`` ..."""
    if value is None:
        return "missing (or null)"
    if isinstance(value, str):
        return f"a string {value[:120]!r}"
    kinds = ((bool, "a boolean"), (int, "a number"), (float, "a number"), (list, "a list"), (dict, "an object"))
    return next((name for kind, name in kinds if isinstance(value, kind)), type(value).__name__)


def _extends(report: object, where: str) -> list[str]:
    """The ``documentInfo.extends`` URLs of an xBRL-CSV report.json; ``XBRLError`` naming the key and what was
    expected when its structure is not the xBRL-CSV one (an object whose ``documentInfo`` object has the xBRL-CSV
    ``documentType`` and a list of URLs in ``extends``)."""
    if not isinstance(report, dict):
        raise XBRLError(f"{where}: the document is {_json_kind(report)}, expected an object with documentInfo")
    info = report.get("documentInfo")
    if not isinstance(info, dict):
        raise XBRLError(f"{where}: documentInfo is {_json_kind(info)}, expected an object with documentType and "
                        "extends")
    if info.get("documentType") != XBRL_CSV:
        raise XBRLError(f"{where}: documentType {info.get('documentType')!r}, not {XBRL_CSV}")
    extends = info.get("extends")
    if not isinstance(extends, list) or not all(isinstance(e, str) for e in extends):
        raise XBRLError(f"{where}: documentInfo.extends is {_json_kind(extends)}, expected a list of taxonomy "
                        "entry-point URLs (strings)")
    return extends


def parse_report_package(zf: zipfile.ZipFile, source: str, root: str = "") -> ParsedReport:
    """The EBA xBRL-CSV report package under ``root`` (its top folder, ``""``: anywhere in the zip) as a
    ``ParsedReport`` (``XBRLError`` naming the member that is wrong)."""
    infos = {i.filename: i for i in zf.infolist() if not i.is_dir() and i.filename.startswith(root)}
    report_json = next((n for n in sorted(infos) if n.endswith("reports/report.json")), None)
    if report_json is None:
        raise XBRLError(f"{source}: report package without reports/report.json" + (f" (under {root})" if root else ""))
    folder = report_json[: -len("report.json")]
    try:
        report: Any = json.loads(read_member(zf, infos[report_json], source))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise XBRLError(f"{source}!{report_json}: not JSON ({exc})") from None
    extends = " ".join(_extends(report, f"{source}!{report_json}"))
    if "eba.europa.eu" not in extends or "/corep/" not in extends:
        raise XBRLError(f"{source}: unsupported taxonomy ({extends or 'no documentInfo.extends'}); supported: EBA "
                        "COREP (eba.europa.eu .../corep/...)")
    release = corep_release(extends)

    def rows(name: str, columns: tuple[str, ...]) -> list[dict[str, str]]:
        member = infos.get(folder + name)
        if member is None:
            raise XBRLError(f"{source}: report package without {folder}{name}")
        return _csv_rows(read_member(zf, member, source), f"{source}!{folder}{name}", columns)

    params = {r.get("name", ""): (r.get("value") or "").strip() for r in rows("parameters.csv", PARAMETERS_COLUMNS)}
    report_date = iso_date(params.get("refPeriod"), "parameters.csv refPeriod", source)
    if report_date is None:
        raise XBRLError(f"{source}: parameters.csv has no refPeriod, so no report date")
    entity = params.get("entityID", "").partition(":")[2] or params.get("entityID", "")
    entity = entity.removesuffix(".CON").removesuffix(".IND")
    filed = {(r.get("templateID") or "").strip() for r in rows("FilingIndicators.csv", INDICATOR_COLUMNS)
             if (r.get("reported") or "true").strip().lower() != "false"}
    currency = params.get("baseCurrency", "").rpartition(":")[2] or "EUR"
    warnings: list[str] = []
    check_report_date(report_date, warnings)
    check_entity_id(entity, "EU", warnings)
    facts: dict[str, float | None] = {}
    units: dict[str, str] = {}
    for name, member in sorted(infos.items()):
        if not name.startswith(folder) or not name.endswith(".csv") or name[len(folder):] in (
                "parameters.csv", "FilingIndicators.csv"):
            continue
        for row in _csv_rows(read_member(zf, member, source), f"{source}!{name}", TABLE_COLUMNS):
            code = DATAPOINT_CELLS.get((row.get("datapoint") or "").strip())
            if code is None or set(row) - {"datapoint", "factValue", "unit"}:
                continue  # rows with key columns (a currency, a counterparty) are not the fixed cell of the rules
            value = plausible_amount(code, parse_number(row.get("factValue") or "", code, warnings), warnings)
            if code in facts and facts[code] != value:
                warnings.append(f"{code} reported twice with different values; kept the first ({facts[code]})")
                continue
            facts[code] = value
            kind = BY_CODE[code].kind
            units[code] = str(row.get("unit") or "").strip() or (
                f"iso4217:{currency}" if kind == MONETARY else "xbrli:pure" if kind == RATIO else "")
    normalise_ratios(facts, units, warnings)
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
