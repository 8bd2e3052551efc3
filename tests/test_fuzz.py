"""Seeded mutation fuzzing of the two front doors that take user files: the XBRL parser (with the rule engine and
the report renderer behind it) and the config loader.

Seeds are real and generated inputs: the EBA's published COREP 4.0 sample (tests/fixtures/real), generated US and
EU filings, and the shipped configs. Each mutant must either be accepted (and then assessed without an exception,
every figure finite) or be refused with the project's own error type (``XBRLError`` / ``ConfigError``), whose
message names the file. Anything else (a ``KeyError``, an ``OverflowError``, a ``RecursionError`` ...) is a bug.
The mutator is seeded, so a failure names a mutant that reproduces; the number of mutants is fixed (no clock).
"""

from __future__ import annotations

import json
import math
import random
import re
from pathlib import Path

import pytest

from finetune.config import load_config
from foundation.errors import ConfigError, XBRLError
from regulator.generator import generate_dataset
from regulator.rules import evaluate_rules
from regulator.xbrl import parse_xbrl_bytes, render_report

ROOT = Path(__file__).resolve().parents[1]
REAL = sorted((ROOT / "tests" / "fixtures" / "real").glob("*.xbrl"))
N_XBRL_MUTANTS = 1500
N_CONFIG_MUTANTS = 1000
N_PACKAGE_MUTANTS = 300

# Values that have broken parsers and loaders before: non-finite, huge, negative, empty, other types, dates.
_ODD_NUMBERS = ["NaN", "INF", "-INF", "1e400", "-1e400", "1e-400", "-0", "", " ", "0x10", "1,5", "1_000",
                "99999999999999999999999999999999", "-5", "0", "1e308", "abc", "12.3.4"]
_ODD_DATES = ["31/12/2015", "2015-02-30", "2015-13-01", "", "0000-00-00", "2015-12-31T00:00:00", "99999-01-01"]
_ODD_YAML = [".inf", "-.inf", ".nan", "-1", "0", "1e400", "null", "''", "[]", "{}", "[1", "{a: b}", "true",
             "yes", "~", "!!binary aGVsbG8=", "&a 1", "*a", "'x' * 100", "0o777", "1_000", "\"\\x00\"",
             "99999999999999999999999999999"]


def _mutate_xbrl(data: bytes, rng: random.Random) -> bytes:
    """One to three structural or value mutations of an XBRL instance."""
    text = data.decode("utf-8", errors="replace")
    for _ in range(rng.randint(1, 3)):
        kind = rng.randrange(9)
        if kind == 0:  # a fact's value
            values = list(re.finditer(r">(-?[0-9][0-9.eE+-]*)<", text))
            if values:
                m = rng.choice(values)
                text = text[:m.start(1)] + rng.choice(_ODD_NUMBERS) + text[m.end(1):]
        elif kind == 1:  # a date
            dates = list(re.finditer(r"\d{4}-\d{2}-\d{2}", text))
            if dates:
                m = rng.choice(dates)
                text = text[:m.start()] + rng.choice(_ODD_DATES) + text[m.end():]
        elif kind == 2:  # truncate
            text = text[: rng.randrange(len(text) + 1)]
        elif kind == 3:  # drop a line
            lines = text.splitlines(keepends=True)
            if lines:
                del lines[rng.randrange(len(lines))]
                text = "".join(lines)
        elif kind == 4:  # duplicate a line
            lines = text.splitlines(keepends=True)
            if lines:
                i = rng.randrange(len(lines))
                lines.insert(i, lines[i])
                text = "".join(lines)
        elif kind == 5:  # an attribute's value (contextRef, unitRef, decimals, scheme ...)
            attrs = list(re.finditer(r'="([^"]*)"', text))
            if attrs:
                m = rng.choice(attrs)
                text = text[:m.start(1)] + rng.choice(["", "x", "-3", "INF", "c0", "EUR", "pure"]) + text[m.end(1):]
        elif kind == 6:  # random bytes somewhere
            i = rng.randrange(len(text) + 1)
            text = text[:i] + "".join(chr(rng.randrange(1, 0x2FF)) for _ in range(rng.randint(1, 8))) + text[i:]
        elif kind == 7:  # swap two lines
            lines = text.splitlines(keepends=True)
            if len(lines) > 1:
                i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
                lines[i], lines[j] = lines[j], lines[i]
                text = "".join(lines)
        else:  # rename an element
            tags = list(re.finditer(r"<([A-Za-z_][\w.-]*:)?([A-Za-z_][\w.-]*)", text))
            if tags:
                m = rng.choice(tags)
                text = text[:m.start(2)] + rng.choice(["x", "context", "unit", "entity", "xbrl"]) + text[m.end(2):]
    return text.encode("utf-8", errors="surrogatepass")


@pytest.fixture(scope="module")
def xbrl_seeds(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    out = tmp_path_factory.mktemp("fuzz-seeds")
    generate_dataset(6, seed=17, out_dir=out / "eu", eu_fraction=1.0, n_train_balanced=3)
    generate_dataset(6, seed=18, out_dir=out / "us", eu_fraction=0.0, n_train_balanced=3)
    generated = sorted(out.glob("*/xbrl/*.xml"))
    assert {p.name[:2] for p in generated} == {"EU", "US"}
    return [p.read_bytes() for p in [*REAL, *generated]]


def test_the_parser_and_rules_survive_mutated_filings(xbrl_seeds: list[bytes]) -> None:
    rng = random.Random(20261201)
    outcomes = {"parsed": 0, "refused": 0}
    for i in range(N_XBRL_MUTANTS):
        seed = rng.randrange(len(xbrl_seeds))
        mutant = _mutate_xbrl(xbrl_seeds[seed], rng)
        source = f"mutant-{i}-of-seed-{seed}.xml"
        try:
            parsed = parse_xbrl_bytes(mutant, source=source)
        except XBRLError as err:
            assert source in str(err), f"{source}: the refusal does not name the file: {err}"
            outcomes["refused"] += 1
            continue
        outcomes["parsed"] += 1
        assert all(v is None or math.isfinite(v) for v in parsed.facts.values()), (source, parsed.facts)
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", parsed.report_date), (source, parsed.report_date)
        result = evaluate_rules(parsed)  # must not raise on whatever the parser accepted
        assert result is not None
        assert render_report(parsed)
    # Both paths were exercised: the mutator neither only breaks nor only keeps files.
    assert outcomes["parsed"] >= N_XBRL_MUTANTS // 10 and outcomes["refused"] >= N_XBRL_MUTANTS // 10, outcomes


def _mutate_yaml(text: str, rng: random.Random) -> str:
    """One to three mutations of a YAML config: values, keys, indentation, lines, bytes."""
    for _ in range(rng.randint(1, 3)):
        lines = text.splitlines(keepends=True) or [""]
        i = rng.randrange(len(lines))
        kind = rng.randrange(6)
        if kind == 0:  # a value
            m = re.match(r"(\s*[\w.-]+:\s*)(\S.*)?$", lines[i].rstrip("\n"))
            if m:
                lines[i] = m.group(1) + rng.choice(_ODD_YAML) + "\n"
        elif kind == 1:  # a key
            lines[i] = re.sub(r"^(\s*)[\w.-]+:", lambda m: m.group(1) + rng.choice(
                ["x:", "train:", "lr:", "1:", "null:", "'':", "<<:"]), lines[i])
        elif kind == 2:  # indentation
            lines[i] = " " * rng.choice([0, 1, 2, 3, 4, 8]) + lines[i].lstrip(" ")
        elif kind == 3:  # drop or duplicate a line
            if rng.random() < 0.5:
                del lines[i]
            else:
                lines.insert(i, lines[i])
        elif kind == 4:  # truncate
            lines = lines[: rng.randrange(len(lines) + 1)]
        else:  # odd characters
            lines[i] = lines[i][: len(lines[i]) // 2] + rng.choice(["\t", "\x00", "\ufeff", "%", "@", "`", "{", "]"]) \
                + lines[i][len(lines[i]) // 2:]
        text = "".join(lines)
    return text


def test_the_config_loader_survives_mutated_configs(tmp_path: Path) -> None:
    seeds = [p.read_text() for p in sorted((ROOT / "configs").glob("*.yaml"))]
    rng = random.Random(1201)
    outcomes = {"valid": 0, "refused": 0}
    path = tmp_path / "mutant.yaml"
    for i in range(N_CONFIG_MUTANTS):
        path.write_text(_mutate_yaml(rng.choice(seeds), rng), encoding="utf-8", errors="surrogatepass")
        try:
            cfg = load_config(path)
        except ConfigError as err:
            assert str(err).strip(), f"mutant {i}: an empty refusal"
            outcomes["refused"] += 1
            continue
        outcomes["valid"] += 1
        assert cfg.world_size() >= 1 and cfg.grad_accum_steps() >= 1, f"mutant {i}"
    assert outcomes["valid"] >= N_CONFIG_MUTANTS // 10 and outcomes["refused"] >= N_CONFIG_MUTANTS // 10, outcomes


def _mutate_package(data: bytes, rng: random.Random) -> bytes:
    """A mutated xBRL-CSV report package: a member's text changed (values, lines, headers), or the zip's bytes."""
    import io
    import zipfile

    if rng.random() < 0.2:  # the container itself: truncated or a byte changed
        cut = bytearray(data[: rng.randrange(len(data) + 1)] if rng.random() < 0.5 else data)
        if cut and rng.random() < 0.5:
            cut[rng.randrange(len(cut))] = rng.randrange(256)
        return bytes(cut)
    src = zipfile.ZipFile(io.BytesIO(data))
    members = {i.filename: src.read(i) for i in src.infolist()}
    name = rng.choice(sorted(members))
    text = members[name].decode("utf-8", errors="replace")
    kind = rng.randrange(5)
    lines = text.splitlines(keepends=True) or [""]
    i = rng.randrange(len(lines))
    if kind == 0:
        lines[i] = re.sub(r"[0-9.]+", lambda m: rng.choice(_ODD_NUMBERS), lines[i], count=1)
    elif kind == 1:
        del lines[i]
    elif kind == 2:
        lines[i] = lines[i].replace(",", rng.choice([",,", ";", '"', ""]), 1)
    elif kind == 3:
        lines[i] = rng.choice(["", "{", "datapoint,factValue,CUS\r\n", "\x00", "name,value\r\n"]) + lines[i]
    else:
        lines = lines[: rng.randrange(len(lines) + 1)]
    members[name] = "".join(lines).encode("utf-8", errors="surrogatepass")
    return _zip_members(members)


def test_the_package_reader_survives_mutated_packages(tmp_path: Path) -> None:
    from regulator.packages import read_zip

    real = ROOT / "tests" / "fixtures" / "real" / "xbridge_eba32_corep_lcr_DUMMYLEI_2023-12-31_xbrl-csv.zip"
    seeds = [real.read_bytes()]
    rng = random.Random(7)
    outcomes = {"parsed": 0, "refused": 0}
    path = tmp_path / "mutant.zip"
    for i in range(N_PACKAGE_MUTANTS):
        path.write_bytes(_mutate_package(rng.choice(seeds), rng))
        try:
            for got in read_zip(path):
                if isinstance(got, XBRLError):
                    outcomes["refused"] += 1
                else:
                    outcomes["parsed"] += 1
                    assert all(v is None or math.isfinite(v) for v in got.facts.values()), i
                    evaluate_rules(got)
        except XBRLError as err:
            assert str(path) in str(err), f"mutant {i}: the refusal does not name the file: {err}"
            outcomes["refused"] += 1
    assert outcomes["parsed"] >= N_PACKAGE_MUTANTS // 10 and outcomes["refused"] >= N_PACKAGE_MUTANTS // 10, outcomes


# ---------------------------------------------------------------------------------------------------------------
# Mutations with a known meaning: units, scales, extra contexts and entities, report dates, package layouts. The
# property: every mutant gets a result with a status, never a traceback (no catch-all "... failed (KeyError ...)"
# reason) and never a non-finite figure in its JSON; a mutant tagged as broken (a non-finite or implausible figure,
# facts of two entities, a ratio in a currency or an undeclared unit, an identifier that is no id, a future date)
# is never ``ok``.

N_SEMANTIC_MUTANTS = 400
N_LAYOUT_MUTANTS = 150
_CATCH_ALL = re.compile(r"(parser|zip reader|rule engine) failed \(")
# facts the rules read in generated seeds: every EBA metric fact, the call report's RC-R items and total assets
_RULE_FACT = re.compile(r'<(eba_met:\w+|cc:(?:RCOA|RCFA)\w+|cc:RCON2170) contextRef="([^"]+)" unitRef="([^"]+)"'
                        r'( decimals="[^"]*")?>([^<]*)</\1>')


def _rule_facts(text: str) -> list[re.Match]:
    """The facts of ``_RULE_FACT`` on the report date (a call report's prior-quarter facts are not read)."""
    report_date = max(re.findall(r"<xbrli:instant>([^<]+)</xbrli:instant>", text), default="")
    return [m for m in _RULE_FACT.finditer(text)
            if re.search(r"\d{4}-\d{2}-\d{2}", m.group(2)) is None or m.group(2).endswith(report_date)]


def _fact_mutation(text: str, rng: random.Random) -> tuple[str, str]:
    """Change one fact the rules read: its unit, its scale or its value; return the text and the tag of what broke."""
    facts = _rule_facts(text)
    if not facts:
        return text, ""
    m = rng.choice(facts)
    tag, unit, scale, value = "", m.group(3), "", m.group(5)
    kind = rng.randrange(4)
    if kind == 0:  # a unit: another declared one (a ratio in a currency, an amount in pure) or an undeclared one
        unit = rng.choice(["NOSUCH", "", "uEUR", "USD", "uPURE", "PURE"])
        tag = "unit" if unit not in ("uEUR", "USD", "uPURE", "PURE") or (unit in ("uPURE", "PURE")) != (
            m.group(3) in ("uPURE", "PURE")) else ""
    elif kind == 1:  # a scale: overflowing, underflowing, out of range or harmless
        scale = rng.choice(["30", "-30", "300", "29", "0"])
        tag = "non-finite" if scale in ("30", "-30", "29") else "" if scale == "0" else "odd-scale"
        if float(value or 0) == 0:
            tag = ""  # zero scaled is zero
    elif kind == 2:  # a value no figure has
        value, tag = rng.choice(["NaN", "INF", "-1e400", "1e-320", "1e300"]), "non-finite"
    else:  # a ratio filed as a percent, or an amount a million times too small
        value = f"{float(value) * 100:.2f}" if float(value) < 10 else f"{float(value) / 1e9:.6g}"
        tag = "" if float(value) == 0 else "rescaled"
    unit_attr = f' unitRef="{unit}"' if unit else ""
    scale_attr = f' scale="{scale}"' if scale else ""
    new = f'<{m.group(1)} contextRef="{m.group(2)}"{unit_attr}{m.group(4) or ""}{scale_attr}>{value}</{m.group(1)}>'
    return text[:m.start()] + new + text[m.end():], tag


def _context_mutation(text: str, rng: random.Random) -> tuple[str, str]:
    """Add a context (another entity's with a fact on it, an empty stray one) or re-identify or re-date the filing."""
    contexts = list(re.finditer(r'<xbrli:context id="([^"]+)">.*?</xbrli:context>', text, re.S))
    ctx = rng.choice(contexts)
    kind = rng.randrange(4)
    if kind == 0:  # another entity, with one of the rules' facts on it
        ident = rng.choice(["999999", "0", "OTHERLEI000000000000", ""])
        other = re.sub(r"(<xbrli:identifier[^>]*>)[^<]*", lambda x: x.group(1) + ident, ctx.group(0))
        other = other.replace(f'id="{ctx.group(1)}"', 'id="other"', 1)
        fact = rng.choice(list(_RULE_FACT.finditer(text)))  # whatever its period: never two entities
        moved = fact.group(0).replace(f'contextRef="{fact.group(2)}"', 'contextRef="other"', 1)
        text = text[:ctx.end()] + "\n" + other + text[ctx.end():]
        return text.replace("</xbrli:xbrl>", moved + "\n</xbrli:xbrl>"), "mixed-entity"
    if kind == 1:  # an empty stray context, later than the report
        stray = re.sub(r"\d{4}-\d{2}-\d{2}", "2030-12-31", ctx.group(0)).replace(f'id="{ctx.group(1)}"', 'id="stray"')
        return text[:ctx.end()] + "\n" + stray + text[ctx.end():], ""
    if kind == 2:  # every identifier one that is no RSSD ID / LEI
        ident = rng.choice(["0", "-1", "x" * 30, ""])
        return re.sub(r"(<xbrli:identifier[^>]*>)[^<]*", lambda x: x.group(1) + ident, text), "bad-entity"
    # every date moved into the future
    return re.sub(r"\b20\d\d-", "2099-", text), "future"


def test_semantic_mutations_never_pass_silently(xbrl_seeds: list[bytes]) -> None:
    from regulator.analyze import FilingResult, analyze_report

    generated = [s for s in xbrl_seeds if b"cc:RCOA" in s or b"cc:RCFA" in s or b"corep/4.0/mod/corep_of" in s]
    rng = random.Random(20261206)
    seen: dict[str, int] = {}
    for i in range(N_SEMANTIC_MUTANTS):
        text = rng.choice(generated).decode()
        tags = set()
        for _ in range(rng.randint(1, 2)):
            text, tag = (_fact_mutation if rng.random() < 0.6 else _context_mutation)(text, rng)
            if tag == "bad-entity":
                tags.discard("mixed-entity")  # every context re-identified alike: one entity again
            tags.add(tag)
        tags.discard("")
        source = f"semantic-mutant-{i}.xml"
        try:
            result = analyze_report(parse_xbrl_bytes(text.encode(), source=source))
        except XBRLError as err:
            assert source in str(err), err
            result = FilingResult(source, "error", [str(err)])
        for tag in tags or {"none"}:
            seen[f"{tag}:{result.status}"] = seen.get(f"{tag}:{result.status}", 0) + 1
        row = json.dumps(result.to_dict(), allow_nan=False)  # finite figures only, or this raises
        assert result.status in ("ok", "needs_review", "cannot_assess", "error"), row
        assert not any(_CATCH_ALL.search(r) for r in result.reasons), (source, result.reasons)
        if tags & {"non-finite", "unit", "bad-entity", "future", "mixed-entity", "odd-scale"}:
            assert result.status != "ok", (source, tags, text)
        if "mixed-entity" in tags:
            assert result.status == "error" and "entities in one instance" in result.reasons[0], (source, result)
    print("semantic mutants, tag:status -> count:", dict(sorted(seen.items())))
    assert {"mixed-entity:error", "non-finite:cannot_assess", "unit:needs_review"} <= set(seen), seen


def _layout_mutation(package: bytes, rng: random.Random) -> tuple[bytes, bool]:
    """A report package with its metadata of another JSON type, a table header renamed, a second package beside it,
    nested in a bulk zip, or macOS Finder members; return the zip and whether it must be refused."""
    import io
    import zipfile

    src = zipfile.ZipFile(io.BytesIO(package))
    members = {i.filename: src.read(i) for i in src.infolist()}
    report = next(n for n in members if n.endswith("reports/report.json"))
    doc = json.loads(members[report])
    kind = rng.randrange(6)
    broken = True
    odd = rng.choice(["a string", 7, None, [1], {"x": 1}, True])
    if kind == 0:
        doc["documentInfo"] = odd
    elif kind == 1:
        doc["documentInfo"]["extends"] = odd if odd != [1] else [1, "x"]
    elif kind == 2:
        table = rng.choice([n for n in members if re.search(r"/c_[\d.]+\w*\.csv$", n)])
        members[table] = re.sub(rb"^[^\r\n]*", rng.choice([b"dp,value", b"", b"datapoint", b"factValue,datapoint"]),
                                members[table], count=1)
        broken = not members[table].startswith(b"factValue,datapoint")
    elif kind == 3:  # two packages side by side
        members = {**{f"a/{n}": b for n, b in members.items()}, **{f"b/{n}": b for n, b in members.items()}}
        broken = False
    elif kind == 4:  # the package zipped inside a bulk zip, with an instance beside it
        members = {"inner.zip": _zip_members(members), "__MACOSX/._inner.zip": b"\x00\x05\x16\x07"}
        broken = False
    else:
        members["__MACOSX/._x.xml"] = b"\x00\x05\x16\x07"
        members["._y.xml"] = b"\x00\x05\x16\x07"
        broken = False
    if kind < 2:
        members[report] = json.dumps(doc).encode()
    return _zip_members(members), broken


def _zip_members(members: dict[str, bytes]) -> bytes:
    import io
    import zipfile

    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for name, body in members.items():
            zf.writestr(name, body)
    return out.getvalue()


def test_package_layout_mutations_get_a_status_each(tmp_path: Path) -> None:
    from regulator.analyze import assess_filings
    from regulator.packages import write_report_package
    from tests.test_packages import CSV_CELLS
    from tests.test_xbrl import LEI

    seeds = [(ROOT / "tests" / "fixtures" / "real" / "xbridge_eba32_corep_lcr_DUMMYLEI_2023-12-31_xbrl-csv.zip"
              ).read_bytes(), write_report_package(LEI, "2024-12-31", CSV_CELLS)]
    rng = random.Random(61)
    outcomes = {"refused": 0, "read": 0}
    for i in range(N_LAYOUT_MUTANTS):
        path = tmp_path / f"layout-{i}.zip"
        data, broken = _layout_mutation(rng.choice(seeds), rng)
        path.write_bytes(data)
        results = assess_filings([path])
        assert results, i
        for r in results:
            assert r.status in ("ok", "needs_review", "cannot_assess", "error"), (i, r)
            assert not any(_CATCH_ALL.search(x) for x in r.reasons), (i, r.reasons)
            assert r.status != "error" or str(path) in r.reasons[0], (i, r.reasons)
            json.dumps(r.to_dict(), allow_nan=False)
        statuses = {r.status for r in results}
        assert (statuses == {"error"}) == broken, (i, broken, [(r.file, r.reasons) for r in results])
        outcomes["refused" if broken else "read"] += 1
    assert min(outcomes.values()) >= N_LAYOUT_MUTANTS // 5, outcomes
