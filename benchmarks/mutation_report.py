"""Summarise ``benchmarks/mutation.py`` JSON results as a Markdown table.

Usage::

    python benchmarks/mutation_report.py RESULT.json [...] [--equivalent EQUIV.json]
                                         [--triage TRIAGE.json ...]

``--equivalent`` names a JSON object {mutant name: reason} of surviving mutants judged
equivalent (no test can tell them apart from the original).  ``--triage`` names a JSON
object with up to three such objects: ``"equivalent"`` (the same), ``"killed_by"``
{mutant: test that fails on it, checked by planting the mutant's diff and running the
test file} and ``"needs_device"`` {mutant: why, and the GPU test that kills it; such a
mutant cannot be told apart on a CPU-only machine, and counts as *not killed* here}.
Equivalent mutants are left out of the kill rate "of non-equivalent mutants".
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


def _pct(k: int, n: int) -> str:
    return f"{k} / {n} ({100 * k / max(n, 1):.0f}%)"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("results", nargs="+", type=Path)
    ap.add_argument("--equivalent", type=Path)
    ap.add_argument("--triage", type=Path, action="append", default=[],
                    help="may be given several times (their entries are merged)")
    args = ap.parse_args()
    equivalent = json.loads(args.equivalent.read_text()) if args.equivalent else {}
    killed_by: dict = {}
    device: dict = {}
    for path in args.triage:
        triage = json.loads(path.read_text())
        equivalent = {**equivalent, **triage.get("equivalent", {})}
        killed_by.update(triage.get("killed_by", {}))
        device.update(triage.get("needs_device", {}))
    rows, survivors = [], []
    for path in args.results:
        d = json.loads(path.read_text())
        muts = d["mutants"]
        n = len(muts)
        eq = [m for m in muts if m["name"] in equivalent and m["after"] not in KILLED]
        ne = n - len(eq)
        kb = sum(m["before"] in KILLED for m in muts)
        ka = sum(m["after"] in KILLED for m in muts)
        kt = ka + sum(m["after"] not in KILLED and m["name"] in killed_by for m in muts)
        nd = sum(m["after"] not in KILLED and m["name"] in device for m in muts)
        of = f" of {d['total']}" if d.get("total") else ""
        sample = f"{n}{of}" + (f" (seed {d['seed']})" if d.get("sample") else " (all)")
        rows.append(
            f"| `{d['module']}` | {d['engine']} | {sample} | {_pct(kb, ne)} | {_pct(ka, ne)} | "
            f"{_pct(kt, ne)} | {_ci(kt, ne)} | {len(eq)} | {nd} | {ne - kt - nd} |"
        )
        for m in muts:
            if m["after"] in KILLED:
                continue
            name = m["name"]
            if name in killed_by:
                why = f"killed by `{killed_by[name]}`"
            elif name in equivalent:
                why = f"equivalent: {equivalent[name]}"
            elif name in device:
                why = f"needs a GPU: {device[name]}"
            else:
                why = "**not killed**"
            survivors.append(f"- `{name}` ({d['module']}): {why}")
    print(f"Date: {date.today()}; machine: {_machine()}; Python {platform.python_version()}, "
          f"mutmut {version('mutmut')}, numba {version('numba')}, torch {version('torch')}.\n")  # fmt: skip
    print("| module | engine | mutants run | killed before | killed by the tool after | "
          "killed after triage | 95% CI | equivalent | needs GPU | not killed |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    print("\nKill rates are of the non-equivalent mutants run. Mutants not killed by the tool:\n")
    print("\n".join(survivors) if survivors else "- none")


if __name__ == "__main__":
    main()
