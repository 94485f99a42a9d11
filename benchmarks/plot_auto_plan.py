"""Plot the per-layer parameters of automatic plans from a bench_auto.py result file.

bench_auto.py writes each plan as the table of ``AutoPlan.table()`` in a fenced block; this
script reads those tables back (text only: nothing from the file is imported or run) and
draws, per plan, each module's dense size and the size the plan chose, coloured by method.

Usage::

    PYTHONPATH=$PWD python benchmarks/plot_auto_plan.py \\
        benchmarks/results/auto_gpt2_variants_cpu.md --out docs/img/auto_plan.png
"""

from __future__ import annotations

import argparse
import re

import numpy as np

COLORS = {"svd": "#1f77b4", "kron": "#d62728", "permuted_kron": "#ff7f0e", "dense": "#7f7f7f"}
ROW = re.compile(r"^(\S+)\s+(svd|kron|permuted_kron|dense)\s.*?\s(\d+)\s+([\d,]+)\s+([\d.]+)$")


def read_plans(text: str) -> dict[str, list[tuple[str, str, int]]]:
    """{plan title: [(module, method, params after), ...]} from a result file's tables."""
    plans: dict[str, list[tuple[str, str, int]]] = {}
    title, rows, inside = None, [], False
    for line in text.splitlines():
        if line.startswith("Chosen per-layer plan") or line.startswith("Plan `"):
            title = line.rstrip(":")
            m = re.match(r"Plan `([^`]+)`", line)
            title = m.group(1) if m else "auto"
        elif line.startswith("```"):
            if inside and title and rows:
                plans[title] = rows
                title, rows = None, []
            inside = not inside
        elif inside and title:
            m = ROW.match(line.strip())
            if m:
                rows.append((m.group(1), m.group(2), int(m.group(4).replace(",", ""))))
    return plans


def dense_sizes(text: str) -> dict[str, int]:
    """Dense size of each module: the largest size any plan gave it (dense rows) — or,
    when no plan keeps it dense, None (only the chosen bar is drawn)."""
    out: dict[str, int] = {}
    for rows in read_plans(text).values():
        for name, method, params in rows:
            if method == "dense":
                out[name] = max(out.get(name, 0), params)
    return out


def plot(plans: dict, dense: dict, path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted({n for rows in plans.values() for n, _, _ in rows})
    fig, axes = plt.subplots(len(plans), 1, figsize=(max(7, 0.45 * len(names)), 2.6 * len(plans)),
                             sharex=True, squeeze=False)
    x = np.arange(len(names))
    for ax, (plan, rows) in zip(axes[:, 0], plans.items()):
        chosen = {n: (m, p) for n, m, p in rows}
        ax.bar(x, [dense.get(n, 0) if n in chosen else 0 for n in names], color="#dddddd")
        ax.bar(x, [chosen.get(n, ("dense", 0))[1] for n in names], width=0.6,
               color=[COLORS[chosen.get(n, ("dense", 0))[0]] for n in names])
        for i, n in enumerate(names):
            if n not in chosen:  # a module this plan did not size (e.g. compressed by a preset)
                ax.text(i, 0, "not\nplanned", ha="center", va="bottom", fontsize=6)
        total = sum(p for _, _, p in rows)
        ax.set_title(f"{plan}: {total:,} parameters in the planned modules", fontsize=8)
        ax.set_ylabel("parameters", fontsize=7)
        ax.tick_params(labelsize=7)
    handles = [matplotlib.patches.Patch(color=c, label=m) for m, c in COLORS.items()]
    axes[0, 0].legend(handles=handles, fontsize=7, ncol=4)
    short = [n.replace("transformer.", "").replace("encoder.layer.", "L") for n in names]
    axes[-1, 0].set_xticks(x, short, rotation=70, ha="right", fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("result", help="a bench_auto.py result file (markdown)")
    p.add_argument("--out", required=True, help="PNG to write")
    p.add_argument("--plans", default=None, help="comma-separated plan names (default: all)")
    p.add_argument("--title", default="per-layer parameters chosen by the automatic plan")
    args = p.parse_args()
    with open(args.result, encoding="utf-8") as f:
        text = f.read()
    plans = read_plans(text)
    if args.plans:
        plans = {k: plans[k] for k in args.plans.split(",")}
    if not plans:
        raise SystemExit(f"{args.result}: no plan table found")
    plot(plans, dense_sizes(text), args.out, args.title)
    print(f"wrote {args.out}: {', '.join(plans)}")


if __name__ == "__main__":
    main()
