"""Peak resident memory of ``tqla compress FOLDER`` per unit of the plan (issue 14).

Runs the ``tqla`` CLI in this process with the given arguments and samples ``VmRSS`` from
``/proc/self/status`` every 5 ms in a thread, attributing each sample to the phase running:
the imports, the set-up (meta model, checkpoint checks, plan), each unit's fit (``fit
NAMES``; from reading its weights to its fitted layers) and save (``save NAMES``: its unit
file, dropping it, returning freed heap pages), and the final assembly.  Prints the peak of
each phase and ``ru_maxrss``.  Linux only (``/proc``).  Only wraps the library's functions
to label the phases; the compression itself is the CLI's.

    python benchmarks/rss_by_unit.py compress SRC --preset tq_gpt2 -o OUT

(``bench_scaling.py memory`` gives the peak of the whole command in a fresh process, next
to the in-memory path's; this script shows where it is reached.)
"""

from __future__ import annotations

import resource
import sys
import threading
import time


def _rss_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def main(argv: list[str]) -> None:
    phase, peaks, order, stop = ["start"], {}, [], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            p, r = phase[0], _rss_kb()
            if p not in peaks:
                order.append(p)
            peaks[p] = max(peaks.get(p, 0), r)
            time.sleep(0.005)

    threading.Thread(target=sample, daemon=True).start()
    phase[0] = "imports"
    from tqla_torch.cli import main as cli
    from tqla_torch.compression import streaming

    fit_unit, assemble = streaming._fit_unit, streaming._assemble

    def fit(model, unit, *args, **kwargs):
        names = ",".join(it.name.removeprefix("transformer.") for it in unit)
        phase[0] = f"fit {names}"
        out = fit_unit(model, unit, *args, **kwargs)
        phase[0] = f"save {names}"
        return out

    def assemble_(*args, **kwargs):
        phase[0] = "assemble"
        return assemble(*args, **kwargs)

    streaming._fit_unit, streaming._assemble = fit, assemble_
    phase[0] = "setup"
    t0 = time.perf_counter()
    rc = cli(argv)
    stop.set()
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"exit {rc}; wall {time.perf_counter() - t0:.1f} s; ru_maxrss {maxrss} kB "
          f"= {maxrss / 2**20:.3f} GiB = {maxrss * 1024 / 1e9:.3f} GB")  # fmt: skip
    for p in order:
        print(f"{peaks[p] / 2**20:7.3f} GiB  {p}")


if __name__ == "__main__":
    main(sys.argv[1:])
