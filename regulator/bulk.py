"""Read the FFIEC CDR's bulk Call Report data: every US bank's Schedule RC-R of one quarter, a bank a line.

The FFIEC Central Data Repository publishes each quarter's Call Reports of all US banks as tab-delimited schedule
files (``FFIEC CDR Call Schedule RCRI 06302024.txt``: Schedule RC-R Part I, regulatory capital) beside a panel of
reporters (``FFIEC CDR Call Bulk POR 06302024.txt``: each bank's name and filing type, 031/041/051). Line 1 of a
schedule holds the MDRM codes (``"IDRSSD"`` first), line 2 their descriptions, then one bank a line; amounts are in
thousands of dollars, ratios in percent (``8.1292%``), an item a bank does not file is blank. The report date is in
the file name only.

Each bank becomes the ``ParsedReport`` its XBRL instance would give: the same datapoints (RCFA read as RCOA, RCFW
as the advanced-approaches ratios, RC-R's total assets RCOA2170/RCFA2170 as RCON2170, the same figure of Schedule
RC item 12), amounts in dollars, ratios as decimals, a CBLR elector's framework, the bank's name and form from the
panel of reporters when it lies beside the schedule (without it the form is read from the items filed, with a
warning). A line that cannot be read is an ``XBRLError`` naming the file, the line and the bank; the others are read.
"""

from __future__ import annotations

import re
from pathlib import Path

from foundation.errors import XBRLError
from regulator.taxonomy import KIND, MONETARY, TEXT, US_BY_CONCEPT
from regulator.xbrl import (
    MAX_BYTES,
    ParsedReport,
    cblr_election,
    cblr_unreadable,
    check_currency,
    check_entity_id,
    merge_advanced,
    normalise_ratios,
    parse_number,
    plausible_amount,
    read_bounded,
)

# The FFIEC's names for the RC-R Part I schedule and the panel of reporters of one quarter (MMDDYYYY).
SCHEDULE_NAME = re.compile(r"^FFIEC CDR Call Schedule RCRI (\d{2})(\d{2})(\d{4})\.txt$", re.IGNORECASE)
POR_NAME = "FFIEC CDR Call Bulk POR {mmddyyyy}.txt"
THOUSANDS = 1000  # bulk amounts are in thousands of dollars; XBRL instances (and ParsedReport) in dollars
FORMS = ("031", "041", "051")


def is_bulk_schedule(path: Path) -> bool:
    """Whether ``path`` is named as an FFIEC CDR bulk RC-R Part I schedule is."""
    return SCHEDULE_NAME.match(Path(path).name) is not None


def read_bulk_schedule(path: Path, *, max_bytes: int = MAX_BYTES) -> list[ParsedReport | XBRLError]:
    """Every bank of a bulk RC-R Part I schedule as a ``ParsedReport``, or an ``XBRLError`` for a line that cannot
    be read; raises ``XBRLError`` when the file itself is not such a schedule (its name, header or encoding)."""
    path = Path(path)
    match = SCHEDULE_NAME.match(path.name)
    if match is None:
        raise XBRLError(f"{path}: not named as an FFIEC CDR bulk schedule (FFIEC CDR Call Schedule RCRI MMDDYYYY.txt)"
                        "; the report date is read from that name")
    month, day, year = match.groups()
    report_date = f"{year}-{month}-{day}"
    lines = _text(read_bounded(path, max_bytes), path).splitlines()
    header = [cell.strip().strip('"') for cell in lines[0].split("\t")] if lines else []
    if not header or header[0] != "IDRSSD":
        raise XBRLError(f"{path}: line 1 does not start with IDRSSD: not an FFIEC CDR bulk schedule")
    panel = read_panel(path.with_name(POR_NAME.format(mmddyyyy=month + day + year)))
    out: list[ParsedReport | XBRLError] = []
    for number, line in enumerate(lines[2:], start=3):  # line 2: the items' descriptions
        if not line.strip():
            continue
        try:
            out.append(_bank(path, number, header, line.split("\t"), report_date, panel))
        except XBRLError as exc:
            exc.source = f"{path}#line {number}"
            out.append(exc)
    if not out:
        raise XBRLError(f"{path}: holds no bank (only its two header lines)")
    return out


def read_panel(path: Path) -> dict[str, tuple[str, str]] | None:
    """RSSD id -> (name, form) from a panel-of-reporters file; None when there is none (or it cannot be read)."""
    try:
        lines = _text(read_bounded(path, MAX_BYTES), path).splitlines()
    except XBRLError:
        return None
    header = [cell.strip().strip('"') for cell in lines[0].split("\t")] if lines else []
    try:
        rssd, name, form = (header.index(c) for c in ("IDRSSD", "Financial Institution Name",
                                                       "Financial Institution Filing Type"))
    except ValueError:
        return None
    panel = {}
    for line in lines[1:]:
        cells = line.split("\t")
        if len(cells) > max(rssd, name, form):
            panel[cells[rssd].strip()] = (cells[name].strip(), cells[form].strip())
    return panel


def _text(data: bytes, path: Path) -> str:
    """The file's text: UTF-8, or Windows-1252 as older FFIEC files are written (bank names with accents)."""
    for encoding in ("utf-8-sig", "cp1252"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise XBRLError(f"{path}: neither UTF-8 nor Windows-1252 text: not an FFIEC CDR bulk file")


def _bank(path: Path, number: int, header: list[str], cells: list[str], report_date: str,
          panel: dict[str, tuple[str, str]] | None) -> ParsedReport:
    """One line of the schedule as the report of its bank."""
    while len(cells) > len(header) and not cells[-1].strip():
        cells = cells[:-1]  # a trailing tab
    rssd = cells[0].strip().strip('"')
    if len(cells) != len(header):
        raise XBRLError(f"{path} line {number} (RSSD {rssd or '?'}): {len(cells)} fields where the header has "
                        f"{len(header)}; the line is cut or shifted")
    warnings: list[str] = []
    check_entity_id(rssd, "US", warnings)
    if warnings:
        raise XBRLError(f"{path} line {number}: {warnings[0]}")
    facts: dict[str, float | None] = {}
    units: dict[str, str] = {}
    advanced: dict[str, float | None] = {}
    advanced_units: dict[str, str] = {}
    framework, filed_rcfa = "", False
    for mdrm, cell in zip(header[1:], cells[1:]):
        cell = cell.strip()
        if not cell:
            continue
        if mdrm == "RCOALE74":
            framework = cblr_election(cell, warnings)
            continue
        code = _datapoint_code(mdrm)
        if code is None:
            continue
        filed_rcfa = filed_rcfa or mdrm.startswith("RCFA")
        value = parse_number(cell.removesuffix("%"), code, warnings)
        if value is not None and KIND[code] == MONETARY:
            value = plausible_amount(code, value * THOUSANDS, warnings)
        unit = "USD" if KIND[code] == MONETARY else "percent" if cell.endswith("%") else "pure"
        into, into_units = (advanced, advanced_units) if mdrm.startswith("RCFW") else (facts, units)
        if code not in into:  # RCOA2170 and RCFA2170 are one datapoint; a bank files one of them
            into[code], into_units[code] = value, unit
    normalise_ratios(facts, units, warnings)
    both = merge_advanced(facts, units, advanced, advanced_units, warnings)
    name, form = (panel or {}).get(rssd, ("", ""))
    if form not in FORMS:
        form = "031" if filed_rcfa else "041"
        warnings.append(f"RSSD {rssd} is not in a panel of reporters beside the schedule ("
                        f"{POR_NAME.format(mmddyyyy='MMDDYYYY')}): form read as FFIEC {form} from the items filed "
                        "and the bank's name left out")
    return ParsedReport(
        source=f"{path}#{rssd}", jurisdiction="US", form=f"FFIEC {form}", entity_id=rssd, entity_name=name or rssd,
        report_date=report_date, currency=check_currency(facts, units, "US", warnings), facts=facts, units=units,
        warnings=tuple(warnings), unreadable=cblr_unreadable(facts) if framework == "CBLR" else {},
        framework=framework, advanced=both,
    )


def trim_schedule(source: Path, out_dir: Path, rssd_ids: list[str], header_lines: int = 2) -> Path:
    """Write ``source``'s first ``header_lines`` lines (2 for a schedule, 1 for a panel of reporters) and the lines
    of the banks ``rssd_ids`` (in the source's order) byte for byte to ``out_dir`` under the same name, so a sample
    of the banks is still the FFIEC's text; ``ValueError`` naming any id the source does not hold."""
    lines = Path(source).read_bytes().splitlines(keepends=True)
    wanted = set(rssd_ids)
    kept = [line for line in lines[header_lines:] if line.split(b"\t", 1)[0].strip().decode() in wanted]
    missing = wanted - {line.split(b"\t", 1)[0].strip().decode() for line in kept}
    if missing:
        raise ValueError(f"{source}: no line for RSSD {', '.join(sorted(missing))}")
    out = Path(out_dir) / Path(source).name
    out.write_bytes(b"".join(lines[:header_lines] + kept))
    return out


def _datapoint_code(mdrm: str) -> str | None:
    """The datapoint an RC-R item is (as ``regulator.xbrl`` reads an instance's concepts), or None."""
    if mdrm[:4] in ("RCFA", "RCFW"):
        mdrm = "RCOA" + mdrm[4:]
    if mdrm == "RCOA2170":
        mdrm = "RCON2170"
    dp = US_BY_CONCEPT.get(mdrm)
    return None if dp is None or dp.kind == TEXT else dp.code
