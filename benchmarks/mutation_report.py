"""Summarise ``benchmarks/mutation.py`` JSON results as a Markdown table.

Usage::

    python benchmarks/mutation_report.py RESULT.json [...] [--equivalent TRIAGE.json]

``--equivalent`` names a JSON object {mutant name: reason} of surviving mutants judged
equivalent (no test can tell them apart from the original); they are left out of the
kill rate "of non-equivalent mutants" and listed with their reason.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import subprocess
from datetime import date
from importlib.metadata import version
from pathlib import Path

KILLED = ("killed", "timeout")


def _machine() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _ci(k: int, n: int) -> str:
    """Wilson 95% interval of a kill rate k/n (a sample of the module's mutants)."""
    if n == 0:
        return "–"
    z, p = 1.96, k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return f"{100 * max(0.0, c - h):.0f}–{100 * min(1.0, c + h):.0f}%"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("results", nargs="+", type=Path)
    ap.add_argument("--equivalent", type=Path)
    args = ap.parse_args()
    equivalent = json.loads(args.equivalent.read_text()) if args.equivalent else {}
    rows, survivors = [], []
    for path in args.results:
        d = json.loads(path.read_text())
        muts = d["mutants"]
        n = len(muts)
        eq = [m for m in muts if m["name"] in equivalent and m["after"] not in KILLED]
        ne = n - len(eq)
        kb = sum(m["before"] in KILLED for m in muts)
        ka = sum(m["after"] in KILLED for m in muts)
        rows.append(
            f"| `{d['module']}` | {d['engine']} | {n} | {kb} ({100 * kb / max(ne, 1):.0f}%) | "
            f"{ka} ({100 * ka / max(ne, 1):.0f}%) | {_ci(ka, ne)} | {len(eq)} | "
            f"{ne - ka} | {d['seconds']} |"
        )
        for m in muts:
            if m["after"] not in KILLED:
                why = equivalent.get(m["name"], "**not killed**")
                survivors.append(f"- `{m['name']}` ({d['module']}): {why}")
    print(f"Date: {date.today()}; machine: {_machine()}; Python {platform.python_version()}, "
          f"mutmut {version('mutmut')}, numba {version('numba')}, torch {version('torch')}.\n")  # fmt: skip
    print("| module | engine | mutants run | killed before | killed after | 95% CI after | "
          "equivalent | surviving | seconds |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    print("\nKill rates are of the non-equivalent mutants run. Surviving mutants:\n")
    print("\n".join(survivors) if survivors else "- none")


if __name__ == "__main__":
    main()
