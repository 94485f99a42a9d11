"""Mutation testing of tqla's core and tqla_torch's layer modules (slow; not part of CI).

Usage (from the repository root, committed code only: sources are taken from ``git
archive HEAD``, so commit first)::

    python benchmarks/mutation.py tqla/kron.py --sample 150 --seed 0
    python benchmarks/mutation.py tqla/_kernels/_numba.py --sample 40
    python benchmarks/mutation.py tqla/kron.py --names 'tqla.kron.x_rearrange__mutmut_*'

Each module is run against its own fast test files (``SCOPES``), in a scratch copy under
``--work`` (default ``/tmp/tqla-mutation``), with one worker so that other processes keep
the CPU.  The JSON written to ``--out`` lists every mutant tried, its status and, for
survivors, the diff; ``benchmarks/results/mutation_<date>.md`` summarises the runs.

Two engines:

* ``mutmut`` (plain-Python modules): mutmut 3 itself (``mutmut run`` in the scratch copy,
  forked test runs, only the tests that reach the mutated function).  mutmut does not
  mutate decorated functions (properties, ``@register``-ed kernel entries, Numba kernels).
* ``compiled`` (``tqla/_kernels/_numba*.py``): mutmut cannot run mutants of ``@njit``
  functions (its trampolines are not Numba-compilable, and it skips decorated functions),
  so the mutants are generated with mutmut's own operators *including* decorated
  functions, applied one at a time to the scratch copy, and the scoped tests run in a
  fresh process.  Numba's on-disk cache is keyed by a hash of the whole source file, so
  every mutant would recompile every kernel (20-40 s); in the scratch copy a
  ``sitecustomize`` keys it by each function's own bytecode instead (which Numba's index
  already includes), and the cache entries of the mutated function's compiled callers
  (which inline or link it) are deleted, so a mutant recompiles only what it changes.

A mutant is *killed* when the tests fail, error or time out.  With ``--sample N`` a
deterministic sample (``--seed``) of N mutants is run; the report states the sample size,
so kill rates of samples come with their binomial uncertainty.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: Module -> (its fast test files before issue 15, the property files issue 15 added).
#: Each mutant is run against the first; the survivors again with both ("before"/"after").
SCOPES: dict[str, tuple[list[str], list[str]]] = {
    "tqla/kron.py": (
        ["tests/test_kron.py", "tests/test_core_api.py"],
        ["tests/test_properties_kron.py", "tests/test_properties_kron_routes.py"],
    ),
    "tqla/shapes.py": (
        ["tests/test_kron.py", "tests/test_core_api.py"],
        [
            "tests/test_properties_kron.py",
            "tests/test_properties_shapes.py",
            "tests/test_properties_kron_routes.py",
        ],
    ),
    "tqla/svd.py": (
        ["tests/test_kron.py", "tests/test_core_api.py"],
        [
            "tests/test_properties_kron.py",
            "tests/test_properties_svd.py",
            "tests/test_properties_kron_routes.py",
        ],
    ),
    "tqla/assignment.py": (
        ["tests/test_assignment.py"],
        ["tests/test_properties_assignment.py", "tests/test_properties_cost_builders.py"],
    ),
    "tqla/lsap.py": (
        ["tests/test_lsap.py", "tests/test_assignment.py"],
        ["tests/test_properties_assignment.py", "tests/test_properties_lsap.py"],
    ),
    "tqla/permuted.py": (
        ["tests/test_permuted.py"],
        [
            "tests/test_properties_assignment.py",
            "tests/test_properties_permuted.py",
            "tests/test_properties_arguments.py",
            "tests/test_properties_permuted_whole.py",
            "tests/test_properties_permuted_api.py",
        ],
    ),
    "tqla/_kernels/_numba.py": (
        ["tests/test_kernels.py"],
        ["tests/test_properties_kernels.py", "tests/test_properties_kernel_table.py"],
    ),
    "tqla/_kernels/_numba_assignment.py": (
        ["tests/test_assignment.py"],
        [
            "tests/test_properties_assignment.py",
            "tests/test_properties_kernels.py",
            "tests/test_properties_jv.py",
            "tests/test_properties_kernel_table.py",
        ],
    ),
    "tqla_torch/layers.py": (["tests/test_layers.py"], ["tests/test_properties_layers.py"]),
    "tqla/tt.py": (
        ["tests/test_tt.py"],
        ["tests/test_properties_tt.py", "tests/test_properties_tt_core.py"],
    ),
    "tqla/tt_matrix.py": (
        ["tests/test_tt.py"],
        ["tests/test_properties_tt.py", "tests/test_properties_tt_matrix.py"],
    ),
    "tqla/spectral.py": (
        ["tests/test_spectral.py"],
        ["tests/test_properties_spectral.py", "tests/test_properties_spectral_fit.py"],
    ),
    "tqla/whiten.py": (["tests/test_whiten.py"], ["tests/test_properties_whiten.py"]),
    # third pass (core modules never sampled before); the second list also names the
    # property files written for their survivors (a file not written is left out)
    "tqla/hetero.py": (
        ["tests/test_hetero.py"],
        ["tests/test_properties_hetero.py", "tests/test_properties_hetero_whole.py"],
    ),
    "tqla/norms.py": (
        ["tests/test_spectral.py", "tests/test_hetero.py"],
        [
            "tests/test_properties_spectral.py",
            "tests/test_properties_norms.py",
            "tests/test_properties_norms_whole.py",
        ],
    ),
    "tqla/tt_permuted.py": (
        ["tests/test_tt.py"],
        ["tests/test_properties_tt.py", "tests/test_properties_tt_permuted.py"],
    ),
    "tqla/spectral_permuted.py": (
        ["tests/test_spectral_permuted.py"],
        [
            "tests/test_properties_spectral_permuted.py",
            "tests/test_properties_spectral_permuted_whole.py",
        ],
    ),
    "tqla/batch.py": (["tests/test_batch.py"], ["tests/test_properties_batch.py"]),
    "tqla/_spectral_residual.py": (
        ["tests/test_spectral.py"],
        [
            "tests/test_properties_spectral.py",
            "tests/test_properties_spectral_residual.py",
            "tests/test_properties_residual_whole.py",
        ],
    ),
    "tqla/_fixed_rank.py": (
        ["tests/test_spectral.py"],
        [
            "tests/test_properties_spectral.py",
            "tests/test_properties_spectral_residual.py",
            "tests/test_properties_residual_whole.py",
        ],
    ),
    "tqla/_permuted_base.py": (
        ["tests/test_permuted.py", "tests/test_tt.py"],
        [
            "tests/test_properties_permuted.py",
            "tests/test_properties_tt_permuted.py",
            "tests/test_properties_permuted_base.py",
            "tests/test_properties_permuted_api.py",
        ],
    ),
    "tqla/_array.py": (
        ["tests/test_validation.py", "tests/test_core_api.py", "tests/test_kernels.py"],
        [
            "tests/test_properties_kron.py",
            "tests/test_properties_array.py",
            "tests/test_properties_svd.py",
            "tests/test_properties_kron_routes.py",
        ],
    ),
    "tqla/_memory.py": (
        ["tests/test_validation.py", "tests/test_kron.py", "tests/test_assignment.py"],
        [
            "tests/test_properties_kron.py",
            "tests/test_properties_memory.py",
            "tests/test_properties_kron_routes.py",
        ],
    ),
    "tqla/_estimator.py": (
        ["tests/test_permuted.py", "tests/test_spectral.py", "tests/test_hetero.py"],
        ["tests/test_properties_estimator.py"],
    ),
    # fifth pass: modules added by issue 13 and the public testing helpers
    "tqla/two_sided.py": (["tests/test_two_sided.py"], ["tests/test_properties_two_sided.py"]),
    "tqla/whiten_structured.py": (
        ["tests/test_whiten_structured.py"],
        ["tests/test_properties_whiten_structured.py"],
    ),
    "tqla/testing/assertions.py": (["tests/test_testing.py"], ["tests/test_properties_testing.py"]),
    "tqla/testing/strategies.py": (["tests/test_testing.py"], ["tests/test_properties_testing.py"]),
    "tqla/testing/spectral_checks.py": (
        ["tests/test_testing.py", "tests/test_hetero.py", "tests/test_spectral.py"],
        ["tests/test_properties_spectral_checks.py"],
    ),
    # the kernel modules' functions are all decorated (@register): run with --engine compiled
    "tqla/_kernels/_numpy.py": (
        ["tests/test_kernels.py"],
        ["tests/test_properties_kernels.py", "tests/test_properties_kernel_table.py"],
    ),
    "tqla/_kernels/_numpy_assignment.py": (
        ["tests/test_assignment.py"],
        [
            "tests/test_properties_assignment.py",
            "tests/test_properties_kernels.py",
            "tests/test_properties_kernel_table.py",
        ],
    ),
    "tqla/_kernels/_array_api.py": (
        ["tests/test_kernels.py", "tests/test_backends.py"],
        ["tests/test_properties_kernels.py", "tests/test_properties_kernel_table.py"],
    ),
    "tqla/_kernels/_array_api_assignment.py": (
        ["tests/test_assignment.py"],
        [
            "tests/test_properties_assignment.py",
            "tests/test_properties_kernels.py",
            "tests/test_properties_kernel_table.py",
        ],
    ),
    "tqla/_kernels/__init__.py": (
        ["tests/test_kernels.py"],
        ["tests/test_properties_kernels.py", "tests/test_properties_kernel_table.py"],
    ),
    "tqla_torch/nn/tt.py": (
        ["tests/test_tt_torch.py", "tests/test_nn_registry.py"],
        ["tests/test_properties_tt_layers.py", "tests/test_properties_tt_linear.py"],
    ),
    "tqla_torch/nn/_tt_forward.py": (
        ["tests/test_tt_torch.py", "tests/test_nn_registry.py"],
        ["tests/test_properties_tt_layers.py", "tests/test_properties_tt_forward.py",
         "tests/test_properties_tt_linear.py"],
    ),
    "tqla_torch/nn/spectral.py": (
        ["tests/test_torch_spectral.py", "tests/test_nn_registry.py", "tests/test_nn_contracts.py",
         "tests/test_nn_contracts_b.py"],
        ["tests/test_properties_hetero_layer.py", "tests/test_properties_spectral_layer_whole.py"],
    ),
    "tqla_torch/nn/kronecker.py": (
        ["tests/test_layers.py", "tests/test_nn_registry.py"],
        ["tests/test_properties_layers.py", "tests/test_properties_kron_layer.py"],
    ),
    "tqla_torch/nn/_kron_forward.py": (
        ["tests/test_layers.py", "tests/test_nn_registry.py"],
        ["tests/test_properties_layers.py", "tests/test_kron_forward_chunks.py",
         "tests/test_properties_kron_forward.py"],
    ),
    "tqla_torch/nn/lowrank.py": (
        ["tests/test_layers.py", "tests/test_nn_registry.py", "tests/test_nn_contracts.py"],
        ["tests/test_properties_lowrank.py", "tests/test_properties_lowrank_whole.py"],
    ),
    "tqla_torch/nn/embedding.py": (
        ["tests/test_layers.py", "tests/test_nn_registry.py"],
        ["tests/test_properties_embedding.py", "tests/test_properties_arguments.py",
         "tests/test_properties_embedding_whole.py"],
    ),
    "tqla_torch/nn/base.py": (
        ["tests/test_layers.py", "tests/test_nn_registry.py", "tests/test_nn_contracts.py",
         "tests/test_nn_contracts_b.py"],
        ["tests/test_properties_base.py", "tests/test_properties_base_whole.py"],
    ),
    "tqla_torch/nn/weights.py": (
        ["tests/test_layers.py", "tests/test_nn_registry.py"],
        ["tests/test_properties_layers.py", "tests/test_properties_weights.py"],
    ),
    "tqla_torch/nn/_embedding_fit.py": (
        ["tests/test_nn_embedding_fit.py", "tests/test_layers.py"],
        ["tests/test_properties_embedding.py", "tests/test_properties_arguments.py",
         "tests/test_properties_embedding_fit_whole.py"],
    ),
}
_LAYER_TESTS = (
    ["tests/test_layers.py", "tests/test_nn_registry.py"],
    ["tests/test_properties_layers.py"],
)

ENV = {
    # one thread everywhere: the run shares the machine, and forked workers must not
    # inherit busy OpenMP pools
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "NUMBA_NUM_THREADS": "1",
    "HYPOTHESIS_PROFILE": "ci",  # derandomized: a mutant's verdict is reproducible
}


def _scope(module: str) -> tuple[list[str], list[str]]:
    if module in SCOPES:
        old, new = SCOPES[module]
    elif module.startswith("tqla_torch/nn/"):
        old, new = _LAYER_TESTS
    else:
        raise SystemExit(f"no test scope for {module}; pass --tests")
    # a property file not written (yet) must not be passed to pytest: its "file not
    # found" error would count every mutant of the second stage as killed
    return old, [t for t in new if (ROOT / t).exists()]


def _export(work: Path) -> None:
    """The committed tree (HEAD) into ``work`` (sources, tests, pyproject)."""
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "HEAD", "tqla", "tqla_torch", "tests", "docs",
         "pyproject.toml"],  # fmt: skip (docs: some tests run the pages' examples)
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(work)], input=archive, check=True)


# --------------------------------------------------------------------------------------
# mutmut engine
# --------------------------------------------------------------------------------------
def _mutmut_stage(work: Path, module: str, tests: list[str], names: list[str] | None) -> dict:
    """Run mutmut in ``work`` with ``tests``; returns {mutant: status} for ``names``
    (every mutant when None: then only generation and stats run, no mutant)."""
    package = module.split("/")[0]
    other = "tqla_torch" if package == "tqla" else "tqla"
    lines = "\n    ".join
    (work / "setup.cfg").write_text(
        "[mutmut]\n"
        f"source_paths={package}\n"
        f"only_mutate={module}\n"
        f"also_copy=\n    {other}\n    docs\n"
        "pytest_add_cli_args=\n    -p\n    no:cacheprovider\n    -x\n"
        f"pytest_add_cli_args_test_selection=\n    {lines(tests)}\n"
        "timeout_multiplier=10.0\n"
        "use_git_change_detection=false\n"
    )
    # a [tool.mutmut] table in pyproject.toml would win over setup.cfg
    py = work / "pyproject.toml"
    py.write_text(py.read_text().split("[tool.mutmut]")[0])
    env = {**os.environ, **ENV, "PYTHONPATH": ""}
    mm = [sys.executable, "-m", "mutmut"]
    t0 = time.perf_counter()
    if names is None:
        batches = [["no-such-mutant"]]
    else:
        batches = [names[i : i + 40] for i in range(0, len(names), 40)]
    for k, batch in enumerate(batches):  # in batches: keeps command lines short
        r = subprocess.run([*mm, "run", "--max-children", "1", *batch], cwd=work, env=env,
                           capture_output=True, text=True)  # fmt: skip
        if "Failed to run clean test" in r.stdout or "failed to collect stats" in r.stdout:
            # (without the second test, a failing stats run leaves every mutant "not checked")
            raise SystemExit(f"the scoped tests fail without a mutant:\n{r.stdout[-3000:]}")
        if names is not None:
            print(f"  {sum(map(len, batches[: k + 1]))}/{len(names)} "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)  # fmt: skip
    listing = subprocess.run([*mm, "results", "--all", "true"], cwd=work, env=env,
                             capture_output=True, text=True, check=True).stdout  # fmt: skip
    status = {}
    for ln in listing.splitlines():
        if "__mutmut_" in ln and ":" in ln:
            k, v = ln.rsplit(":", 1)
            status[k.strip()] = v.strip()
    if names is None:
        return status
    return {n: status.get(n, "not checked") for n in names}


def _mutmut(work: Path, module: str, scope: tuple[list[str], list[str]], args) -> list[dict]:
    old, new = scope
    everything = list(_mutmut_stage(work, module, old, None))
    args.total = len(everything)
    names = _select(everything, args)
    print(f"{module}: {len(names)} mutants to run", flush=True)
    before = _mutmut_stage(work, module, old, names)
    again = [n for n in names if before[n] not in KILLED]
    print(f"  before: {len(names) - len(again)} killed; {len(again)} again with {new}", flush=True)
    after = dict(before)
    if again and new:
        work2 = work.with_name(work.name + "_after")
        _export(work2)
        _mutmut_stage(work2, module, old + new, None)
        after.update(_mutmut_stage(work2, module, old + new, again))
    else:
        work2 = work
    out = []
    for n in names:
        rec = {"name": n, "before": before[n], "after": after[n]}
        if after[n] not in KILLED:
            rec["diff"] = subprocess.run([sys.executable, "-m", "mutmut", "show", n], cwd=work2,
                                         env={**os.environ, **ENV, "PYTHONPATH": ""},
                                         capture_output=True, text=True).stdout  # fmt: skip
        out.append(rec)
    return out


KILLED = ("killed", "timeout")


# --------------------------------------------------------------------------------------
# compiled engine (Numba kernels)
# --------------------------------------------------------------------------------------
def _compiled_mutants(path: Path) -> list[tuple[str, str, int]]:
    """(name, mutated source maker, line) for every mutant mutmut's operators make inside the
    functions of ``path``, decorated (``@njit``) functions included."""
    cwd = os.getcwd()
    cfg = path.parent / "_mutation_cfg"
    cfg.mkdir(exist_ok=True)
    (cfg / "setup.cfg").write_text("[mutmut]\nsource_paths=.\n")
    os.chdir(cfg)  # mutmut reads its configuration from the working directory
    try:
        import libcst as cst
        from libcst.metadata import MetadataWrapper, PositionProvider
        from mutmut.mutation import file_mutation as fm
        from mutmut.mutation.pragma_handling import get_ignored_lines

        class Visitor(fm.MutationVisitor):
            def _skip_node_and_children(self, node):  # noqa: ANN001
                if isinstance(node, cst.FunctionDef) and node.decorators:
                    return False  # also mutate compiled kernels
                return super()._skip_node_and_children(node)

            def _create_mutations(self, node):  # noqa: ANN001
                n0 = len(self.mutations)
                super()._create_mutations(node)
                pos = self.get_metadata(PositionProvider, node, None)
                for m in self.mutations[n0:]:
                    m.line = pos.start.line if pos else 0  # type: ignore[attr-defined]

        code = path.read_text()
        wrapper = MetadataWrapper(cst.parse_module(code))
        visitor = Visitor(fm.mutation_operators, get_ignored_lines(str(path), code, wrapper, None))
        module = wrapper.visit(visitor)
        out = []
        for i, m in enumerate(visitor.mutations):
            if m.contained_by_top_level_function is None:
                continue  # module-level constants (tile sizes, thresholds) are tuning knobs
            fn = m.contained_by_top_level_function.name.value

            def render(m=m):  # rendering is slow (the whole module): only when run
                return module.deep_replace(m.original_node, m.mutated_node).code

            out.append((f"{fn}__mut_{i}", render, m.line))
        return out
    finally:
        os.chdir(cwd)
        shutil.rmtree(cfg, ignore_errors=True)


_SITECUSTOMIZE = """\
# Written by benchmarks/mutation.py into its scratch copy only: key Numba's disk cache by
# each function's bytecode (part of Numba's index key) rather than by the whole file.
try:
    import numba.core.caching as _c

    _c._SourceFileBackedLocatorMixin.get_source_stamp = lambda self: b"tqla-mutation"
except ImportError:
    pass
"""


def _callers(src: str) -> dict[str, set[str]]:
    """Top-level function name -> names of the module's functions that mention it."""
    import ast

    tree = ast.parse(src)
    funcs = {n.name: ast.get_source_segment(src, n) or "" for n in tree.body
             if isinstance(n, ast.FunctionDef)}  # fmt: skip
    return {f: {g for g, body in funcs.items() if g != f and f in body} for f in funcs}


def _stale(func: str, callers: dict[str, set[str]]) -> set[str]:
    out, todo = {func}, [func]
    while todo:
        for g in callers.get(todo.pop(), ()):
            if g not in out:
                out.add(g)
                todo.append(g)
    return out


def _drop_cache(cache: Path, funcs: set[str]) -> None:
    for f in cache.rglob("*.nb[ic]"):
        stem = f.name.split(".")
        if any(part.split("-")[0] in funcs for part in stem):
            f.unlink()


def _compiled(work: Path, module: str, scope: tuple[list[str], list[str]], args) -> list[dict]:
    import difflib

    path = work / module
    original = path.read_text()
    mutants = _compiled_mutants(path)
    by_name = {n: (render, line) for n, render, line in mutants}
    names = _select(list(by_name), args)
    args.total = len(by_name)
    print(f"{module}: {len(mutants)} mutants, {len(names)} to run", flush=True)
    (work / "sitecustomize.py").write_text(_SITECUSTOMIZE)
    cache = work / ".nb"
    env = {**os.environ, **ENV, "PYTHONPATH": str(work), "NUMBA_CACHE_DIR": str(cache)}
    old, new = scope
    pytest = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider"]

    def verdict(tests: list[str]) -> str:
        try:
            r = subprocess.run([*pytest, *tests], cwd=work, env=env, capture_output=True,
                               text=True, timeout=args.timeout)  # fmt: skip
        except subprocess.TimeoutExpired:
            return "timeout"
        return {0: "survived", 5: "no tests"}.get(r.returncode, "killed")

    callers = _callers(original)
    t0 = time.perf_counter()
    r = subprocess.run([*pytest, *old, *new], cwd=work, env=env, capture_output=True, text=True)
    if r.returncode != 0:  # (this run also fills the compiled-kernel cache)
        raise SystemExit(f"the scoped tests fail without a mutant:\n{r.stdout[-3000:]}")
    print(f"  baseline green ({time.perf_counter() - t0:.0f} s)", flush=True)
    out = []
    try:
        for k, name in enumerate(names):
            render, line = by_name[name]
            src = render()
            stale = _stale(name.split("__mut_")[0], callers)
            _drop_cache(cache, stale)
            path.write_text(src)
            before = verdict(old)
            after = before if before in KILLED or not new else verdict(new)
            path.write_text(original)
            _drop_cache(cache, stale)  # callers compiled against the mutant
            rec = {"name": name, "before": before, "after": after, "line": line}
            if after not in KILLED:
                diff = difflib.unified_diff(
                    original.splitlines(True), src.splitlines(True), module, module, n=1
                )
                rec["diff"] = "".join(diff)
            out.append(rec)
            print(f"  {k + 1}/{len(names)} {name}: {before} -> {after} "
                  f"({time.perf_counter() - t0:.0f} s)",
                  flush=True)  # fmt: skip
    finally:
        path.write_text(original)
        _drop_cache(cache, set(callers))
    return out


# --------------------------------------------------------------------------------------
def _select(names: list[str], args: argparse.Namespace) -> list[str]:
    if args.names:
        import fnmatch

        names = [n for n in names if any(fnmatch.fnmatch(n, p) for p in args.names)]
    if args.sample and len(names) > args.sample:
        names = sorted(random.Random(args.seed).sample(names, args.sample))
    return names


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("module", help="file to mutate, relative to the repository root")
    ap.add_argument("--tests", nargs="+", help="test files (default: SCOPES[module])")
    ap.add_argument("--engine", choices=["auto", "mutmut", "compiled"], default="auto")
    ap.add_argument("--sample", type=int, default=0, help="run a random sample of N mutants")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--names", nargs="+", help="only mutants matching these glob patterns")
    ap.add_argument("--timeout", type=float, default=300.0, help="per mutant (compiled engine)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/tqla-mutation"))
    ap.add_argument("--out", type=Path, help="JSON result file")
    args = ap.parse_args(argv)
    module = args.module
    scope = (args.tests, []) if args.tests else _scope(module)
    engine = args.engine
    if engine == "auto":
        engine = "compiled" if "/_kernels/_numba" in module else "mutmut"
    work = args.work / module.replace("/", "_").removesuffix(".py")
    _export(work)
    t0 = time.perf_counter()
    runs = (_compiled if engine == "compiled" else _mutmut)(work, module, scope, args)
    counts = {stage: {} for stage in ("before", "after")}
    for r in runs:
        for stage in counts:
            counts[stage][r[stage]] = counts[stage].get(r[stage], 0) + 1
    rate = {
        stage: sum(v for k, v in c.items() if k in KILLED) / len(runs) if runs else None
        for stage, c in counts.items()
    }
    summary = {
        "module": module,
        "engine": engine,
        "tests_before": scope[0],
        "tests_added": scope[1],
        "sample": args.sample,
        "seed": args.seed,
        "n_run": len(runs),
        "total": getattr(args, "total", None),
        "counts": counts,
        "kill_rate": rate,
        "seconds": round(time.perf_counter() - t0),
        "commit": subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                                 capture_output=True, text=True).stdout.strip(),  # fmt: skip
        "mutants": runs,
    }
    print(json.dumps({k: v for k, v in summary.items() if k != "mutants"}, indent=1))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_suffix(".tmp")
        tmp.write_text(json.dumps(summary, indent=1))
        tmp.replace(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
