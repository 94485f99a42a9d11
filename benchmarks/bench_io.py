"""Cost of the SHA-256 check on ``tqla_torch.from_pretrained`` for a GPT-2-small-sized file.

A randomly initialised ``GPT2LMHeadModel(GPT2Config())`` (124 M parameters, float32, a ~500 MB
``model.safetensors``) is saved with :func:`tqla_torch.save_pretrained`.  A second folder holds
the same weights file (a hard link) and a ``tqla_config.json`` without the recorded checksum,
so :func:`tqla_torch.from_pretrained` skips the check there and does everything else the same.
Both loads run interleaved, ``--repeats`` times, in one process; the table reports the minimum
and median times, their ratios, and the time of ``hashlib.sha256`` on the file's bytes alone.

    python benchmarks/bench_io.py                 # writes benchmarks/results/io_<date>.md
    python benchmarks/bench_io.py --repeats 2 --no-write
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import torch  # noqa: E402
from transformers import GPT2Config, GPT2LMHeadModel  # noqa: E402

from tqla_torch.io import CONFIG_NAME, WEIGHTS_NAME, from_pretrained, save_pretrained  # noqa: E402


def _cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or "unknown"


def _time(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def run(repeats: int, root: Path) -> dict:
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config()).eval()
    checked = save_pretrained(model, root / "checked")
    del model
    unchecked = root / "unchecked"
    unchecked.mkdir()
    os.link(checked / WEIGHTS_NAME, unchecked / WEIGHTS_NAME)
    doc = json.loads((checked / CONFIG_NAME).read_text())
    del doc["weights"]["sha256"]
    (unchecked / CONFIG_NAME).write_text(json.dumps(doc))
    logging.getLogger("tqla_torch.io").setLevel(logging.ERROR)  # the "no checksum" warning

    size = (checked / WEIGHTS_NAME).stat().st_size
    times: dict[str, list[float]] = {"with": [], "without": [], "sha256": []}

    def hash_only() -> float:
        data = (checked / WEIGHTS_NAME).read_bytes()
        return _time(lambda: hashlib.sha256(data).hexdigest())

    for _ in range(repeats):
        times["without"].append(_time(lambda: from_pretrained(unchecked)))
        times["with"].append(_time(lambda: from_pretrained(checked)))
        times["sha256"].append(hash_only())
    best = {k: min(v) for k, v in times.items()}
    median = {k: statistics.median(v) for k, v in times.items()}
    return {
        "size": size,
        "times": times,
        "best": best,
        "median": median,
        "ratio": best["with"] / best["without"],
        "median_ratio": median["with"] / median["without"],
    }


def report(result: dict, repeats: int, load: tuple[float, float, float], command: str) -> str:
    b, m = result["best"], result["median"]
    rounded = {k: [round(t, 3) for t in v] for k, v in result["times"].items()}
    versions = ", ".join(
        f"{name} {metadata.version(name)}" for name in ("torch", "transformers", "safetensors")
    )
    return (
        "# from_pretrained with and without the SHA-256 check (GPT-2 small, float32)\n\n"
        f"- date: {_dt.date.today().isoformat()}\n"
        f"- machine: {_cpu_model()}, {os.cpu_count()} CPUs, {platform.platform()}\n"
        f"- load average at start (1/5/15 min): {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} "
        "(the machine is shared: absolute times are noisy, the ratio less so)\n"
        f"- python {platform.python_version()}; {versions}\n"
        f"- command: {command}\n"
        f"- {repeats} interleaved repeats; weights file {result['size'] / 1e6:.1f} MB\n\n"
        "| load | min s | median s |\n|---|---:|---:|\n"
        f"| from_pretrained, checksum verified | {b['with']:.3f} | {m['with']:.3f} |\n"
        f"| from_pretrained, no checksum recorded | {b['without']:.3f} | {m['without']:.3f} |\n"
        f"| hashlib.sha256 of the bytes alone | {b['sha256']:.3f} | {m['sha256']:.3f} |\n\n"
        f"ratio with/without: **{result['ratio']:.2f}** (minima), "
        f"**{result['median_ratio']:.2f}** (medians); extra time {m['with'] - m['without']:.3f} s "
        f"(median) for SHA-256 at {result['size'] / b['sha256'] / 1e9:.2f} GB/s\n\n"
        f"all times (s): {json.dumps(rounded)}\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        result = run(args.repeats, Path(tmp))
    command = "python benchmarks/bench_io.py" + " ".join(
        [""] + (argv if argv is not None else sys.argv[1:])
    )
    text = report(result, args.repeats, load, command)
    print(text)
    if not args.no_write:
        out = Path(__file__).parent / "results" / f"io_{_dt.date.today().isoformat()}.md"
        out.write_text(text)
        print(f"written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
