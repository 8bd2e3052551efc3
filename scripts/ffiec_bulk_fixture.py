"""Trim an FFIEC CDR bulk RC-R Part I schedule and its panel of reporters to a few banks, byte for byte.

The FFIEC publishes every quarter's Call Reports of all US banks as tab-delimited bulk files (about 4,600 banks).
The test fixture under ``tests/fixtures/real/ffiec-bulk/`` keeps the two header lines and the lines of the banks
named here, as they are in the source (same bytes, same CRLF line ends), so the fixture is the FFIEC's text:

    python scripts/ffiec_bulk_fixture.py "FFIEC CDR Call Schedule RCRI 06302024.txt" \\
        "FFIEC CDR Call Bulk POR 06302024.txt" tests/fixtures/real/ffiec-bulk 852218 480228 ...

It prints the sha256 of each source and each trimmed file (tests/fixtures/README.md records them).
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

from regulator.bulk import trim_schedule


def main(argv: list[str]) -> None:
    if len(argv) < 4:
        raise SystemExit(__doc__)
    schedule, panel, out_dir, ids = Path(argv[0]), Path(argv[1]), Path(argv[2]), argv[3:]
    out_dir.mkdir(parents=True, exist_ok=True)
    for source, header_lines in ((schedule, 2), (panel, 1)):  # a schedule has a line of descriptions too
        out = trim_schedule(source, out_dir, ids, header_lines)
        for path in (source, out):
            print(f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {path.stat().st_size:>9,}  {path}")


if __name__ == "__main__":
    main(sys.argv[1:])
