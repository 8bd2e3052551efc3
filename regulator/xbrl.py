"""Parse EBA COREP and FFIEC Call Report XBRL instances into a ``ParsedReport``, and render it as compact text.

The parser is hostile-input safe: ``defusedxml`` with DTDs forbidden (no entity expansion, no external entities),
no schema fetching, a size limit and strict UTF-8. Every refusal is an ``XBRLError`` naming the file and the problem.
Only the datapoints of ``regulator.taxonomy`` are kept; every other concept in the instance is ignored.
"""

from __future__ import annotations

import codecs
import errno
import io
import math
import re
import stat
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from xml.etree.ElementTree import Element, ParseError

import defusedxml
import defusedxml.ElementTree as DET

from foundation.errors import XBRLError
from regulator.taxonomy import (
    AMOUNT_MAX,
    AMOUNT_MIN,
    DATAPOINTS,
    DPM_RELEASES,
    EBA_BASE,
    EU_BY_IDENTITY,
    KIND,
    MONETARY,
    NS,
    RATIO,
    RATIO_COMPONENTS,
    RATIO_MIN,
    RATIO_UNIT_BOUNDS,
    TEXT,
    US_BY_CONCEPT,
    Datapoint,
    not_mapped,
)

MAX_BYTES = 8 * 1024 * 1024
# What a community bank leverage ratio elector does not report: the risk-based capital figures and ratios. Its CET1
# capital it files (RCOAP859, equal to its Tier 1 in the 7 real electors of tests/fixtures/real), but no rule of the
# framework reads it, so a filing without it is not incomplete either (CBLR_NOT_REQUIRED).
CBLR_NOT_REPORTED = ("RCOA3792", "RCOAA223", "RCOAP793", "RCOA7206", "RCOA7205", "RCOAH311")
CBLR_NOT_REQUIRED = ("RCOAP859",)
_XBRLI = "{%s}" % NS["xbrli"]
_XSI_NIL = "{%s}nil" % NS["xsi"]
_SKIP_NAMESPACES = {NS["xbrli"], NS["link"], NS["find"]}
_DECL_ENCODING = re.compile(rb"""^<\?xml[^>]*encoding\s*=\s*["']([A-Za-z0-9._-]+)["']""")
ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a zip's local file header, an empty zip's end record
PERCENT_UNITS = ("percent", "pct")  # a unit measure (local name) that says a ratio is filed in percent
# The CBLR election (RCOALE74, Schedule RC-R Part I item 31.a) as filed: an elector, or not.
_CBLR_ELECTION = {"1": "CBLR", "true": "CBLR", "0": "", "false": ""}
# A buffer and the (ratio, minimum) pairs it is the lowest margin of (12 CFR 324.11(a)(4)(ii)).
BUFFER_OVER = {"RCOAH311": (("RCOAP793", 0.045), ("RCOA7206", 0.06), ("RCOA7205", 0.08))}
_RSSD_ID = re.compile(r"[1-9][0-9]{0,9}")  # an FFIEC RSSD ID: a positive integer
_LEI = re.compile(r"[A-Z0-9]{18}[0-9]{2}")  # ISO 17442: 18 alphanumerics and two check digits


@dataclass(frozen=True)
class ParsedReport:
    """What the rules need from one instance: identity, report date and the selected facts.

    ``facts`` maps a datapoint code to its value (``None`` for a nil fact; absent when not reported); monetary values
    are in currency units, ratios are decimals (0.1234 = 12.34%). ``units`` gives each fact's unit measure.
    ``unreadable`` names the datapoints this filing cannot give whatever the bank did: ``not filed`` (its template
    is not among the filing indicators of a module-wise EBA submission) or ``not mapped`` (the DPM mapping has no
    identity for the cell in the filing's taxonomy release); rules on them are not assessed rather than flagged.
    ``release`` is the EBA taxonomy release from the schemaRef (``4.0``), empty for call reports.
    """

    source: str
    jurisdiction: str
    form: str
    entity_id: str
    entity_name: str
    report_date: str
    currency: str
    facts: dict[str, float | None] = field(default_factory=dict)
    units: dict[str, str] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    unreadable: dict[str, str] = field(default_factory=dict)
    release: str = ""
    framework: str = ""  # "CBLR" for a US community bank leverage ratio elector (RCOALE74 = 1)
    # FFIEC 031 advanced-approaches ratios (RCFW*, by RCOA code) filed beside the standardized RCFA* ones in
    # ``facts``: such a bank must meet every minimum under both (12 CFR 324.10(c)); the rules check the lower.
    advanced: dict[str, float | None] = field(default_factory=dict)


@dataclass(frozen=True)
class _Context:
    identifier: str
    instant: str | None
    end: str | None
    dims: frozenset[tuple[str, str]]


_NOT_FILES = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a named pipe"), (stat.S_ISCHR, "a device"),
              (stat.S_ISBLK, "a device"), (stat.S_ISSOCK, "a socket"))


def read_bounded(path: Path, max_bytes: int) -> bytes:
    """The bytes of a regular file of at most ``max_bytes``; ``XBRLError`` for anything else.

    The size is checked while reading, not only from ``stat``: a device (``/dev/zero``) or a named pipe reports size
    0 and would otherwise be read without end (or block forever), so only regular files are opened at all.
    """
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        reason = "a symbolic link loop" if exc.errno == errno.ELOOP else exc.strerror or str(exc)
        raise XBRLError(f"{path}: cannot read the XBRL instance ({reason})") from exc
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in _NOT_FILES if test(mode)), "not a regular file")
        raise XBRLError(f"{path}: is {kind}, not a file; give XBRL instance files or folders of them")
    try:
        with path.open("rb") as fh:
            data = fh.read(max_bytes + 1)
    except OSError as exc:
        raise XBRLError(f"{path}: cannot read the XBRL instance ({exc.strerror or exc})") from exc
    if len(data) > max_bytes:
        raise XBRLError(f"{path}: file is over the {max_bytes:,}-byte limit for an XBRL instance")
    return data


def parse_xbrl_file(path: Path, *, max_bytes: int = MAX_BYTES) -> ParsedReport:
    """Read and parse one XBRL instance file; raise ``XBRLError`` naming the file when it cannot be used."""
    return parse_xbrl_bytes(read_bounded(Path(path), max_bytes), source=str(path), max_bytes=max_bytes)


def parse_xbrl_bytes(data: bytes, *, source: str = "<bytes>", max_bytes: int = MAX_BYTES) -> ParsedReport:
    """Parse an XBRL instance held in memory; ``source`` names it in errors and in the result."""
    if data[:4] in ZIP_MAGIC:
        raise XBRLError(f"{source}: this is a zip archive (it starts with PK\\x03\\x04), not an XML instance; "
                        "name it *.zip to read it as an xBRL-CSV report package or a bulk zip")
    root, namespaces = _safe_root(data, source, max_bytes)
    if root.tag != _XBRLI + "xbrl":
        raise XBRLError(f"{source}: root element is {_qname(root.tag)}, not xbrli:xbrl: this is not an XBRL instance")
    jurisdiction, form, release = _taxonomy(root, source, namespaces)
    contexts = _contexts(root, source, namespaces)
    units = _units(root)
    items = _fact_elements(root)
    # Only contexts that carry facts say whose report this is and when: an empty stray context decides nothing.
    carrying = {cid: contexts[cid] for _, _, _, cid in items if cid in contexts} or contexts
    report_date = _report_date(carrying, source)
    warnings: list[str] = []
    check_report_date(report_date, warnings)
    entity_id = _entity_id(carrying, jurisdiction, source, warnings)
    facts: dict[str, float | None] = {}
    fact_units: dict[str, str] = {}
    names: list[str] = []
    advanced: dict[str, float | None] = {}  # FFIEC 031 RCFW* (advanced approaches)
    advanced_units: dict[str, str] = {}
    framework = ""
    for el, ns, local, ctx_id in items:
        ctx = contexts.get(ctx_id or "")
        if ctx is None:
            warnings.append(f"fact {local} refers to unknown context {ctx_id!r}; ignored")
            continue
        if report_date not in (ctx.instant, ctx.end):
            continue  # other periods (prior quarters) are not what the rules assess; a duration ending on the
            # report date is kept (call reports put some capital items, e.g. the buffer H311, on CD_ contexts)
        if jurisdiction == "US" and local == "RCOALE74" and _is_call_concepts(ns):
            framework = cblr_election(el.text or "", warnings) or framework
            continue
        dp = _datapoint(jurisdiction, release, ns, local, ctx)
        if dp is None:
            continue
        if dp.kind == TEXT:
            names.append((el.text or "").strip())
            continue
        value = _numeric_value(el, dp.code, warnings)
        unit = _fact_unit(el, dp.code if local == dp.code else f"{dp.code} (fact {local})", units, warnings)
        if jurisdiction == "US" and local.startswith("RCFW"):
            if dp.code not in advanced:
                advanced[dp.code], advanced_units[dp.code] = value, unit
            continue
        if dp.code in facts and facts[dp.code] != value:
            warnings.append(f"{dp.code} reported twice with different values; kept the first ({facts[dp.code]})")
            continue
        facts[dp.code] = value
        fact_units[dp.code] = unit
    normalise_ratios(facts, fact_units, warnings)
    both = merge_advanced(facts, fact_units, advanced, advanced_units, warnings)
    currency = check_currency(facts, fact_units, jurisdiction, warnings)
    filed = {(el.text or "").strip() for el in root.iter("{%s}filingIndicator" % NS["find"])
             if el.get("filed", "true") != "false"}
    unreadable = unreadable_datapoints(filed, release, facts, warnings) if jurisdiction == "EU" else {}
    if framework == "CBLR":
        unreadable = cblr_unreadable(facts)
    return ParsedReport(
        source=source,
        jurisdiction=jurisdiction,
        form=form,
        entity_id=entity_id,
        entity_name=next((n for n in names if n), entity_id),
        report_date=report_date,
        currency=currency,
        facts=facts,
        units=fact_units,
        warnings=tuple(warnings),
        unreadable=unreadable,
        release=release,
        framework=framework,
        advanced=both,
    )


def merge_advanced(facts: dict[str, float | None], fact_units: dict[str, str], advanced: dict[str, float | None],
                   advanced_units: dict[str, str], warnings: list[str]) -> dict[str, float | None]:
    """Read an FFIEC 031 filer's advanced-approaches items (RCFW*, by RCOA code) as decimals; one filed without its
    standardized RCFA twin joins ``facts`` as filed (some extracts carry CET1 only as RCFWP859); return the ratios
    filed under both approaches (``ParsedReport.advanced``), which the rules compare at the lower."""
    normalise_ratios(advanced, advanced_units, warnings, approach=" (RCFW, advanced approaches)")
    both = {code for code in advanced if code in facts and KIND.get(code) == RATIO}
    for code, value in advanced.items():
        if code not in facts:
            facts[code], fact_units[code] = value, advanced_units[code]
    return {code: advanced[code] for code in sorted(both)}


def cblr_unreadable(facts: dict[str, float | None]) -> dict[str, str]:
    """What a CBLR elector's filing cannot give: it reports no risk-based figure (Schedule RC-R Part I, items
    32-53), so those rules are not applicable (``n/a``) rather than missing."""
    return {code: "n/a" for code in CBLR_NOT_REPORTED + CBLR_NOT_REQUIRED if code not in facts}


def _fact_elements(root: Element) -> list[tuple[Element, str, str, str | None]]:
    """The instance's facts: (element, namespace URI, local name, contextRef) of every top-level element outside
    the XBRL infrastructure namespaces (comments and processing instructions skipped)."""
    out = []
    for el in root:
        if not isinstance(el.tag, str):
            continue
        ns, _, local = el.tag[1:].partition("}") if el.tag.startswith("{") else ("", "", el.tag)
        if ns not in _SKIP_NAMESPACES:
            out.append((el, ns, local, el.get("contextRef")))
    return out


def _entity_id(contexts: dict[str, _Context], jurisdiction: str, source: str, warnings: list[str]) -> str:
    """The one entity the instance reports on (``.CON``/``.IND`` suffix dropped); ``XBRLError`` naming them when its
    facts belong to several (one instance is one bank's report: never mix entities)."""
    ids = {re.sub(r"\.(CON|IND)$", "", c.identifier) for c in contexts.values()}
    if len(ids) > 1:
        named = ", ".join(repr(i) for i in sorted(ids))
        raise XBRLError(f"{source}: facts of {len(ids)} entities in one instance ({named}); an instance is one "
                        "bank's report, split it per entity")
    entity = next(iter(ids), "")
    check_entity_id(entity, jurisdiction, warnings)
    return entity


def check_entity_id(entity: str, jurisdiction: str, warnings: list[str]) -> None:
    """Warn when ``entity`` is neither an FFIEC RSSD ID (US) nor an LEI (EU): a filing's identity is then unknown."""
    valid, what = (_RSSD_ID, "an FFIEC RSSD ID (a positive integer)") if jurisdiction == "US" else (
        _LEI, "an LEI (ISO 17442: 20 characters)")
    if not valid.fullmatch(entity):
        warnings.append(f"entity identifier {entity[:40]!r} is not {what}; the filing's bank is not identified")


def check_report_date(report_date: str, warnings: list[str]) -> None:
    """Warn when the report date is after today: no bank reports a quarter that has not ended."""
    today = date.today().isoformat()
    if report_date > today:
        warnings.append(f"report date {report_date} is after today ({today}): not a plausible report date")


def cblr_election(text: str, warnings: list[str]) -> str:
    """``CBLR`` for a community bank leverage ratio elector (RCOALE74 = 1), ``""`` for a non-elector (0); any other
    value is named in a warning and read as no election, so the risk-based rules apply."""
    value = text.strip().lower()
    if value not in _CBLR_ELECTION:
        warnings.append(f"RCOALE74 (CBLR election) has value {text.strip()[:30]!r}, expected 1 (elector) or 0; "
                        "the framework cannot be decided, assessed under the risk-based rules")
        return ""
    return _CBLR_ELECTION[value]


def _fact_unit(el: Element, name: str, units: dict[str, str], warnings: list[str]) -> str:
    """The unit measure of a numeric fact (``iso4217:USD``); ``""``, with a warning naming the fact (``name``), when
    its unitRef is missing or names no declared unit."""
    ref = el.get("unitRef")
    if el.get(_XSI_NIL) == "true" and not ref:
        return ""
    if ref is None:
        warnings.append(f"{name} has no unitRef; its unit is unknown")
        return ""
    if ref not in units:
        warnings.append(f"{name} refers to undeclared unit {ref[:40]!r}; its unit is unknown")
        return ""
    return units[ref]


def _resolve(qname: str, namespaces: dict[str, str]) -> tuple[str, str]:
    """``prefix:local`` -> (namespace URI, local); an unknown prefix keeps the prefix as the 'URI'."""
    prefix, _, local = qname.strip().rpartition(":")
    return namespaces.get(prefix, prefix), local


def _eba_dimension(dimension: str, member: str, namespaces: dict[str, str]) -> tuple[str, str]:
    """An explicit member as the DPM mapping names it: (dimension local name, ``DOMAIN:member``)."""
    dim_ns, dim_local = _resolve(dimension, namespaces)
    mem_ns, mem_local = _resolve(member, namespaces)
    if not (dim_ns.startswith(EBA_BASE + "dim") and mem_ns.startswith(EBA_BASE + "dom/")):
        return dimension.strip(), member.strip()  # not an EBA dimension: kept as written, matches nothing
    return dim_local, f"{mem_ns.removeprefix(EBA_BASE + 'dom/')}:{mem_local}"


def unreadable_datapoints(filed: set[str], release: str, facts: dict[str, float | None],
                          warnings: list[str]) -> dict[str, str]:
    """EU datapoints a filing cannot give: templates outside its filing indicators (``filed``, e.g. ``C_47.00``;
    empty: no indicators, every template counts as filed) and cells the DPM mapping lacks for ``release``."""
    if release != "3.x" and release not in DPM_RELEASES:
        warnings.append(f"taxonomy corep {release or '(no release in its URL)'} is not a release of the DPM mapping "
                        f"({', '.join(DPM_RELEASES)}); facts read by the identities of every release it knows")
    templates = {t.replace("_", " ")[:7] for t in filed}
    out: dict[str, str] = {}
    for dp in DATAPOINTS["EU"]:
        if dp.code not in facts and templates and dp.code[:7] not in templates:
            out[dp.code] = "not filed"
    unmapped = {code: why for code, why in not_mapped(release).items() if code not in facts and code not in out}
    if unmapped:
        out.update({code: "not mapped" for code in unmapped})
        cells = ", ".join(code.rsplit(" ", 1)[0] for code in unmapped)
        warnings.append(f"taxonomy corep {release or '?'}: cells {cells} not mapped ({next(iter(unmapped.values()))})")
    return out


def _safe_root(data: bytes, source: str, max_bytes: int) -> tuple[Element, dict[str, str]]:
    """The document's root element and its namespace declarations (prefix -> URI, the first one of a prefix wins),
    from one defused parse. QNames in attribute values and text (an XBRL dimension and its member) are resolved with
    the declarations, so an instance is read by namespace URI and local name whatever prefixes it chose."""
    if len(data) > max_bytes:
        raise XBRLError(f"{source}: {len(data):,} bytes, over the {max_bytes:,}-byte limit for an XBRL instance")
    if not data.strip():
        raise XBRLError(f"{source}: file is empty, expected an XBRL instance")
    body = data[3:] if data.startswith(codecs.BOM_UTF8) else data
    declared = _DECL_ENCODING.match(body.lstrip())
    encoding = declared.group(1).decode().lower() if declared else "utf-8"
    try:
        body.decode(encoding)
    except LookupError as exc:
        raise XBRLError(f"{source}: declares unknown encoding {encoding!r}; re-save the instance as UTF-8") from exc
    except UnicodeDecodeError as exc:
        raise XBRLError(
            f"{source}: not valid {encoding} text (undecodable byte at offset {exc.start}); re-save it as UTF-8"
        ) from exc
    root: Element | None = None
    namespaces: dict[str, str] = {}
    try:
        for event, item in DET.iterparse(io.BytesIO(body), events=("start", "start-ns"), forbid_dtd=True,
                                         forbid_entities=True, forbid_external=True):
            if event == "start-ns":
                namespaces.setdefault(*item)
            elif root is None:
                root = item
    except defusedxml.DTDForbidden as exc:
        raise XBRLError(
            f"{source}: contains a DTD/entity declaration ({exc.name or 'inline DTD'}); refused because it enables "
            "entity-expansion (billion laughs) and external-entity (XXE) attacks; XBRL instances never need one"
        ) from exc
    except (defusedxml.EntitiesForbidden, defusedxml.ExternalReferenceForbidden) as exc:
        raise XBRLError(f"{source}: declares XML entities ({exc}); refused as a possible XXE/expansion attack") from exc
    except ParseError as exc:
        line, col = exc.position
        raise XBRLError(f"{source}: not well-formed XML at line {line}, column {col}: {exc.msg}") from exc
    assert root is not None  # a document without an element is a ParseError above
    return root, namespaces


def _qname(tag: str) -> str:
    if not tag.startswith("{"):
        return tag
    ns, _, local = tag[1:].partition("}")
    prefix = next((p for p, uri in NS.items() if uri == ns), ns)
    return f"{prefix}:{local}"


COREP_RELEASE = re.compile(r"/corep/(\d+\.\d+)(?:\.\d+)*/|/corep/(its-[\w.-]+/\d{4}-\d{2}-\d{2})/")


def corep_release(href: str) -> str:
    """The taxonomy release a COREP schemaRef or xBRL-CSV ``extends`` URL names: ``4.0`` from ``.../corep/4.0/...``,
    ``3.x`` from the pre-4.0 paths named by the ITS and a date (``.../corep/its-005-2020/2022-03-01/...``), ``""``
    when neither."""
    match = COREP_RELEASE.search(href.lower())
    if match is None:
        return ""
    return match.group(1) or "3.x"
_CALL_FORM = re.compile(r"(?:ffiec|call-report)0?(031|041|051)")


def _taxonomy(root: Element, source: str, namespaces: dict[str, str]) -> tuple[str, str, str]:
    """(jurisdiction, form, EBA release) from the schemaRef; a call report also by its concepts namespace, since
    CDR instances carry relative schemaRefs (``call-report051-2020-09-30-v215.xsd``, ``concepts.xsd``)."""
    hrefs = [el.get("{%s}href" % NS["xlink"], "") for el in root.iter("{%s}schemaRef" % NS["link"])]
    for href in hrefs:
        low = href.lower()
        if "eba.europa.eu" in low and "/corep/" in low:
            return "EU", "COREP", corep_release(low)
    call_concepts = any(_is_call_concepts(uri) for uri in namespaces.values())
    for href in hrefs:
        low = href.lower()
        match = _CALL_FORM.search(low)
        if "ffiec.gov" in low or (match and call_concepts):
            return "US", f"FFIEC {match.group(1) if match else '041'}", ""
    found = ", ".join(hrefs) if hrefs else "no link:schemaRef"
    raise XBRLError(
        f"{source}: unsupported taxonomy ({found}); supported: EBA COREP (eba.europa.eu .../corep/...) and "
        "FFIEC Call Report (ffiec.gov, or a call-reportNNN schema with the FFIEC call concepts namespace)"
    )


def _is_call_concepts(uri: str) -> bool:
    """The FFIEC Call Report concepts namespace, in either CDR generation (http://www.ffiec.gov/... or
    https://www.cdr.ffiec.gov/...)."""
    return "ffiec.gov/" in uri and uri.rstrip("/").endswith("/xbrl/call/concepts")


def _contexts(root: Element, source: str, namespaces: dict[str, str]) -> dict[str, _Context]:
    out: dict[str, _Context] = {}
    for el in root.iter(_XBRLI + "context"):
        ident = el.find(f"{_XBRLI}entity/{_XBRLI}identifier")
        period = el.find(_XBRLI + "period")
        if ident is None or period is None:
            raise XBRLError(f"{source}: context {el.get('id')!r} lacks an entity identifier or a period")
        instant = iso_date(period.findtext(_XBRLI + "instant"), el.get("id"), source)
        end = iso_date(period.findtext(_XBRLI + "endDate"), el.get("id"), source)
        dims = frozenset(
            _eba_dimension(m.get("dimension", ""), m.text or "", namespaces)
            for m in el.iter("{%s}explicitMember" % NS["xbrldi"])
        )
        out[el.get("id", "")] = _Context((ident.text or "").strip(), instant, end, dims)
    if not out:
        raise XBRLError(f"{source}: no xbrli:context elements; an XBRL instance needs at least one")
    return out


_XS_DATE = re.compile(r"(\d{4}-\d{2}-\d{2})(?:T[\d:.]*(?:Z|[+-]\d{2}:\d{2})?)?")


def iso_date(text: str | None, context_id: str | None, source: str) -> str | None:
    """An XBRL period date as ``YYYY-MM-DD`` (a dateTime keeps its date); ``XBRLError`` for anything else.

    Report dates are compared as ISO strings (rule versions are dated), so ``31/12/2015`` must never get through.
    """
    if text is None or not text.strip():
        return None
    value = text.strip()
    match = _XS_DATE.fullmatch(value)
    if match is not None:
        try:
            return date.fromisoformat(match.group(1)).isoformat()
        except ValueError:  # 2015-13-01: the right shape, not a date
            pass
    raise XBRLError(f"{source}: context {context_id!r} has period date {value[:40]!r}, not an xs:date (YYYY-MM-DD)")


def _units(root: Element) -> dict[str, str]:
    out: dict[str, str] = {}
    for el in root.iter(_XBRLI + "unit"):
        measure = el.findtext(_XBRLI + "measure")
        out[el.get("id", "")] = (measure or "divide").strip()
    return out


def _report_date(contexts: dict[str, _Context], source: str) -> str:
    """The latest instant of ``contexts`` (those carrying facts): filings carry prior-period instants and
    year-to-date durations too."""
    instants = [c.instant for c in contexts.values() if c.instant]
    if not instants:
        raise XBRLError(f"{source}: no instant context carries a fact, so no report date can be determined")
    return max(instants)


def _datapoint(jurisdiction: str, release: str, ns: str, local: str, ctx: _Context) -> Datapoint | None:
    """The datapoint a fact is, by namespace URI and local name (US: the MDRM, RC-R's RCFA/RCFW read as RCOA, an
    FFIEC 031's consolidated RCFD balance-sheet items as their RCON codes; EU:
    metric + dimension members through the DPM identities of the filing's release, or of every release when the
    schemaRef names one the mapping does not have)."""
    if jurisdiction == "US":
        if not _is_call_concepts(ns):
            return None
        if local[:4] in ("RCFA", "RCFW"):
            local = "RCOA" + local[4:]
        elif local[:4] == "RCFD" and f"RCON{local[4:]}" in US_BY_CONCEPT:
            local = "RCON" + local[4:]  # FFIEC 031 files the balance sheet consolidated (RCFD), 041/051 as RCON
        return US_BY_CONCEPT.get(local)
    if ns != NS["eba_met"]:
        return None
    table = EU_BY_IDENTITY.get(release if release in DPM_RELEASES else None, EU_BY_IDENTITY[None])
    return table.get((local, ctx.dims))


def parse_number(text: str, code: str, warnings: list[str]) -> float | None:
    """A fact's value as a finite float; None (with a warning naming the datapoint) for anything else."""
    text = text.strip()
    try:
        value = float(text)
    except ValueError:
        warnings.append(f"{code} has non-numeric value {text[:30]!r}; treated as not reported")
        return None
    if not math.isfinite(value):  # "NaN", "INF" and "1e400" are floats to Python, never a reported figure
        warnings.append(f"{code} has non-finite value {text[:30]!r}; treated as not reported")
        return None
    return value


def _numeric_value(el: Element, code: str, warnings: list[str]) -> float | None:
    if el.get(_XSI_NIL) == "true":
        return None
    value = parse_number(el.text or "", code, warnings)
    if value is None:
        return None
    scale = el.get("scale")  # inline-XBRL style scaling, honoured when a converter leaves it on the fact
    if scale:
        try:
            exponent = int(scale)
            if not -30 <= exponent <= 30:
                raise ValueError(scale)
            value *= 10.0 ** exponent
            if not math.isfinite(value):
                warnings.append(f"{code} is non-finite after scale {scale!r} ({(el.text or '').strip()[:30]!r}); "
                                "treated as not reported")
                return None
        except ValueError:
            warnings.append(f"{code} has invalid scale {scale[:30]!r}; value used unscaled")
    return plausible_amount(code, value, warnings)


def plausible_amount(code: str, value: float | None, warnings: list[str]) -> float | None:
    """``value`` unless ``code`` is an amount no filing can hold (``AMOUNT_MIN``..``AMOUNT_MAX`` currency units, or
    zero): then None, with a warning naming the fact and the value (a denormal, an overflowing scale)."""
    if value is None or KIND.get(code) != MONETARY or value == 0 or AMOUNT_MIN <= abs(value) <= AMOUNT_MAX:
        return value
    warnings.append(f"{code} amount {value:.6g} is not plausible (a filed amount is 0 or between {AMOUNT_MIN:g} and "
                    f"{AMOUNT_MAX:g} currency units); treated as not reported")
    return None


def normalise_ratios(facts: dict[str, float | None], units: dict[str, str], warnings: list[str], *,
                     approach: str = "") -> None:
    """Read every ratio of ``facts`` as the decimal the rules use (in place), deciding its unit (``ratio_as_decimal``).
    ``approach`` follows the datapoint code in the warnings (`` (RCFW, advanced approaches)``)."""
    for code in sorted(facts, key=lambda c: c in BUFFER_OVER):  # a buffer after the ratios it is read against
        value = facts[code]
        if value is not None and KIND.get(code) == RATIO:
            facts[code] = ratio_as_decimal(code, value, units.get(code, ""), facts, warnings, approach)


def ratio_as_decimal(code: str, value: float, unit: str, facts: dict[str, float | None], warnings: list[str],
                     approach: str = "") -> float | None:
    """A ratio fact as a decimal (0.95 = 95%): a unit that says percent is divided by 100, whatever its size (real
    trust banks file CET1 ratios of 300% and more); otherwise the value's plausibility decides
    (``RATIO_UNIT_BOUNDS``), with a warning naming the fact, the value and what was assumed. A buffer over its bound
    is read the way that agrees with the bank's own ratios (``implied_buffer``): 1.09 is a 109% buffer beside a 113.5%
    CET1 ratio and a 1.09% one beside a 5.59% ratio.

    A ratio filed with its components (``RATIO_COMPONENTS``) is left as filed below the bound of no plausible
    figure: the data-quality checks compare it with them and name a x100 scale error. A value plausible neither as
    a decimal nor as a percent (nor a ratio at all: a nonzero magnitude below ``RATIO_MIN``) is treated as not
    reported.
    """
    in_percent = unit.rpartition(":")[2].lower() in PERCENT_UNITS
    decimal = value / 100 if in_percent else value
    decimal_max, percent_above = RATIO_UNIT_BOUNDS.get(code, (math.inf, math.inf))
    size = abs(decimal)
    name = f"{code}{approach} = {value:.6g}{' (unit ' + unit + ')' if in_percent else ''}"
    if 0 < size < RATIO_MIN:
        warnings.append(f"{name} is not a plausible ratio (below {RATIO_MIN:g}, under any unit: a scale or a unit "
                        "error); treated as not reported")
        return None
    if size <= decimal_max or in_percent:  # its unit says what it is: a trust bank's 370% CET1 ratio is real
        return decimal
    implied = implied_buffer(code, facts)
    if implied is not None:  # a buffer over 100%: the bank's own ratios say which reading it is
        if abs(value - implied) <= abs(value / 100 - implied):
            return value
        warnings.append(f"{name} is not plausible as a decimal ratio ({value * 100:.6g}%) and the bank's ratios "
                        f"give a buffer of {implied * 100:.4g}%: read as a percent, {value:.6g}% = {value / 100:.6g}")
        return value / 100
    if size > percent_above * 100:
        warnings.append(f"{name} is not plausible as a decimal ratio or as a percent; treated as not reported")
        return None
    num, den = RATIO_COMPONENTS.get(code, ("", ""))
    if facts.get(num) is not None and facts.get(den):  # the data-quality check compares it with its components
        if size > percent_above:
            warnings.append(f"{name} is not plausible as a decimal ratio ({value * 100:.6g}%); read as filed, as its "
                            "components are filed: the data-quality check compares them")
        return value
    if size > percent_above:
        warnings.append(f"{name} is not plausible as a decimal ratio ({value * 100:.6g}%): read as a percent, "
                        f"{value:.6g}% = {value / 100:.6g}")
        return value / 100
    warnings.append(f"{name}: cannot tell a decimal ratio ({value * 100:.6g}%) from a percent ({value:.6g}%); read as "
                    "a decimal, as ratios are filed")
    return value


def implied_buffer(code: str, facts: dict[str, float | None]) -> float | None:
    """The buffer ``code`` must equal by its definition from the ratios ``facts`` holds (``BUFFER_OVER``: the
    conservation buffer is the lowest of CET1 - 4.5%, Tier 1 - 6% and total - 8%, 12 CFR 324.11(a)(4)(ii)), or None
    when ``code`` is no such buffer or a ratio is not filed."""
    over = BUFFER_OVER.get(code)
    ratios = [facts.get(ratio) for ratio, _ in over] if over else []
    if not over or any(r is None for r in ratios):
        return None
    return min(r - minimum for r, (_, minimum) in zip(ratios, over))


def check_currency(facts: dict, units: dict[str, str], jurisdiction: str, warnings: list[str]) -> str:
    """The filing's currency; a warning for monetary facts in another unit (a currency, or pure) and for ratios in
    anything but pure (a ratio in USD is not a ratio the rules can trust)."""
    expected = "EUR" if jurisdiction == "EU" else "USD"
    seen = {units[c].rpartition(":")[2] for c in facts if KIND.get(c) == MONETARY and units.get(c)}
    for cur in sorted(seen - {expected}):
        warnings.append(f"monetary facts in {cur}, expected {expected}")
    for code in facts:
        measure = units.get(code, "").rpartition(":")[2]
        if KIND.get(code) == RATIO and measure and measure.lower() not in ("pure", *PERCENT_UNITS):
            warnings.append(f"ratio {code} in unit {units[code]}, expected xbrli:pure; read as a ratio")
    return expected if not seen - {expected} else sorted(seen)[0]


def format_ratio(value: float) -> str:
    """Render a decimal ratio as a percentage, exactly enough that it never crosses a threshold by rounding."""
    pct = value * 100
    two = f"{pct:.2f}%"
    return two if abs(round(pct, 2) - pct) < 1e-9 else f"{pct:.4f}%"


def format_threshold(value: float) -> str:
    """Render a rule's constant threshold as briefly as it is exact: 0.045 -> ``4.5%``, 1.0 -> ``100%``."""
    return f"{round(value * 100, 4):g}%"


def format_amount(value: float) -> str:
    """Render a currency amount in whole millions (the header line states the currency)."""
    return f"{value / 1e6:.0f}"


def render_value(code: str, value: float | None, present: bool, absent: str = "not reported") -> str:
    """Render one fact value as the report text shows it (also used by check lines quoting the report); ``absent``
    says why a missing fact is missing (``not reported``, ``not filed``, ``not mapped``)."""
    if not present:
        return absent
    if value is None:
        return "nil"
    return format_ratio(value) if KIND.get(code) == RATIO else format_amount(value)


# Facts parsed but not shown to the model: a call report's total assets (RCON2170), which no rule of the table reads
# (analyze's PCA category does, from the parsed facts) and which the FFIEC's bulk RC-R data never gives a risk-based
# filer: shown, its gap made every real bulk bank look like a filing that leaves a required fact out (lever 49).
UNRENDERED = frozenset({"RCON2170"})


def render_report(parsed: ParsedReport) -> str:
    """Compact, stable text the model reads (about 60-110 tokens), the same for every filing format.

    A header (jurisdiction, form, report date, entity name, currency), then one line per COREP template
    (``CET1 ratio 12.82%; T1 ratio 13.41%; ...``) or, for a call report, one line of amounts and one of ratios.
    Amounts are in millions, ratios in percent; a nil fact shows ``nil``, an absent one ``not reported``, and a last
    line names them (``Not reported: leverage assets, conservation buffer``; ``Nil: RWA``): what the filing leaves
    out, not a verdict, next to where the answer's data-quality findings begin. Identifiers (LEI, RSSD, MDRM codes)
    and ``UNRENDERED`` facts are left out: the model needs the figures, and ``analyze`` keeps the ids.
    """
    form = f"{parsed.form} {parsed.framework}" if parsed.framework else parsed.form
    header = f"{parsed.jurisdiction} {form} {parsed.report_date} {parsed.entity_name} ({parsed.currency} m)"
    groups: dict[str, list[str]] = {}
    gaps: dict[str, list[str]] = {"not reported": [], "nil": []}
    for dp in DATAPOINTS[parsed.jurisdiction]:
        if dp.code in UNRENDERED:
            continue
        value = render_value(dp.code, parsed.facts.get(dp.code), dp.code in parsed.facts,
                             parsed.unreadable.get(dp.code, "not reported"))
        key = dp.code[:7] if parsed.jurisdiction == "EU" else dp.kind
        groups.setdefault(key, []).append(f"{dp.label} {value}")
        if value in gaps:
            gaps[value].append(dp.label)
    gap_lines = [f"{state.capitalize()}: {', '.join(labels)}" for state, labels in gaps.items() if labels]
    return "\n".join([header, *("; ".join(items) for items in groups.values()), *gap_lines])
