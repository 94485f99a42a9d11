"""tqla_torch/nn/_embedding_fit.py stated function by function (issue 15, fifth pass).

The loop of one start is stated on a scripted run (every step, the acceptance guard, the
stopping rule and the phase switch are visible), the Gram pass block by block, the error
routes of a fit, the device of every created tensor (a recording ``TorchFunctionMode``), and
the whole call of each callee.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from _spies import Spy  # noqa: E402
from torch.overrides import TorchFunctionMode  # noqa: E402

import tqla_torch.nn._embedding_fit as fit_mod  # noqa: E402
from tqla.kron import KroneckerShape, kron_svd  # noqa: E402


class _Record(TorchFunctionMode):
    """Records the kwargs of factory calls and the operand shapes/dtypes of ``@``."""

    def __init__(self):
        super().__init__()
        self.factories, self.matmuls = [], []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name in ("zeros", "as_tensor"):
            self.factories.append((name, dict(kwargs)))
        if name == "matmul":
            self.matmuls.append(
                (tuple(args[0].shape), tuple(args[1].shape), args[0].dtype, args[1].dtype)
            )
        return func(*args, **kwargs)


_Spy = Spy


# ------------------------------------------------------------------ column_gram
def test_column_gram_is_one_gemm_per_block_of_rows_summed_in_float64():
    g = torch.Generator().manual_seed(0)
    W = torch.randn(fit_mod._GRAM_BLOCK + 5, 3, generator=g)  # float32: two blocks
    with _Record() as rec:
        G = fit_mod.column_gram(W)
    assert rec.factories == [("zeros", {"dtype": torch.float64, "device": W.device})]
    assert rec.matmuls == [
        ((3, 4096), (4096, 3), torch.float32, torch.float32),
        ((3, 5), (5, 3), torch.float32, torch.float32),
    ]
    a, b = W[:4096], W[4096:]
    want = (a.T @ a).double() + (b.T @ b).double()
    assert isinstance(G, np.ndarray) and G.dtype == np.float64 and G.shape == (3, 3)
    np.testing.assert_array_equal(G, want.numpy())
    assert fit_mod._GRAM_BLOCK == 4096 and fit_mod._DIRECT_BELOW == 1e-3


# ------------------------------------------------------------------ _GramRun.fit
def _kron_error(W: np.ndarray, inv: np.ndarray, k: int, rank: int) -> float:
    """‖U − K‖/‖W‖ of kron_svd of U = W[:, inv] (the definition)."""
    U = W[:, inv]
    K = kron_svd(U, ((W.shape[0], W.shape[1] // k), (1, k)), rank)
    return float(np.linalg.norm(U - K.to_dense()) / np.linalg.norm(W))


@pytest.mark.parametrize("planted", [False, True])
@pytest.mark.parametrize("rank", [1, 2])
def test_gram_run_fit_is_the_kron_svd_error_by_its_route(planted, rank, monkeypatch):
    rng = np.random.default_rng(rank)
    V, k, n1 = 20, 3, 4
    if planted:  # near-exact: the error is measured on the table (the direct route)
        W = np.kron(rng.standard_normal((V, n1)), rng.standard_normal((1, k)))
        W = W + 1e-6 * rng.standard_normal(W.shape)
        if rank == 2:
            W = W + np.kron(rng.standard_normal((V, n1)), rng.standard_normal((1, k)))
    else:
        W = rng.standard_normal((V, n1 * k))
    Wt = torch.from_numpy(W)
    G = fit_mod.column_gram(Wt)
    run = fit_mod._GramRun(Wt, G, k, rank, "scipy", float(np.trace(G)))
    assert (run.n1, run.k, run.rank, run.solver) == (n1, k, rank, "scipy")
    assert run.norm == pytest.approx(np.linalg.norm(W), rel=1e-12)
    direct = _Spy(run._direct_error2)
    monkeypatch.setattr(run, "_direct_error2", direct)
    inv = np.arange(n1 * k) if planted else rng.permutation(n1 * k)
    with _Record() as rec:
        P, err = run.fit(inv)
    assert err == pytest.approx(_kron_error(W, inv, k, rank), rel=1e-6, abs=1e-12)
    assert len(direct.calls) == (1 if planted else 0)
    if planted:
        ((args, kwargs),) = direct.calls
        assert np.array_equal(args[0], inv) and args[1].shape == (k, rank) and kwargs == {}
        assert rec.factories == [("as_tensor", {"device": Wt.device})] * 2
    # Π is the projector on the top-`rank` eigenspace of R(U)ᵀR(U)
    R = W[:, inv].reshape(V * n1, k)
    w, Q = np.linalg.eigh(R.T @ R)
    np.testing.assert_allclose(P, Q[:, k - rank :] @ Q[:, k - rank :].T, atol=1e-8)


@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e3])
def test_errors_are_relative_whatever_the_scale_of_the_table(scale):
    """‖W‖² below 1 (or above) changes no error: each is relative to ‖W‖."""
    W = torch.randn(12, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    G = fit_mod.column_gram(scale * W)
    run = fit_mod._GramRun(scale * W, G, 2, 1, "scipy", float(np.trace(G)))
    assert run.norm == pytest.approx(scale * float(torch.linalg.norm(W)), rel=1e-12)
    inv = np.random.default_rng(0).permutation(8)
    want = _kron_error(W.numpy(), inv, 2, 1)
    assert run.fit(inv)[1] == pytest.approx(want, rel=1e-9)
    _, errors = fit_mod.gram_column_fit(scale * W, 2, n_iter=2)
    _, ref = fit_mod.gram_column_fit(W, 2, n_iter=2)
    np.testing.assert_allclose(errors, ref, rtol=1e-9)


def test_a_zero_table_has_zero_error():
    Z = torch.zeros(6, 8, dtype=torch.float64)
    G = fit_mod.column_gram(Z)
    run = fit_mod._GramRun(Z, G, 2, 1, "scipy", 0.0)
    assert run.norm == 1.0
    _, err = run.fit(np.arange(8))
    assert err == 0.0
    perm, errors = fit_mod.gram_column_fit(Z, 2, n_restarts=3, seed=1)
    assert sorted(perm.tolist()) == list(range(8)) and set(errors) == {0.0}


def test_the_first_of_the_best_starts_wins(monkeypatch):
    """Starts scripted to end at 0.5, 0.25, 0.25, 0.75: the second is returned (a later
    tie does not replace it), its column order inverted into tqla's col_perm."""
    finals = [0.5, 0.25, 0.25, 0.75]
    seen = []

    def start(run, inv, rule, n_iter, tol):
        seen.append(inv.copy())
        return inv[::-1].copy(), [1.0, finals[len(seen) - 1]]

    monkeypatch.setattr(fit_mod, "_run_start", start)
    W = torch.randn(10, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    perm, errors = fit_mod.gram_column_fit(W, 2, n_restarts=4, seed=2)
    assert errors == [1.0, 0.25] and len(seen) == 4
    assert perm.tolist() == np.argsort(seen[1][::-1]).tolist()


# ------------------------------------------------------------------ _run_start
class _ScriptedRun:
    """A run whose errors are a table of column orders and whose steps follow a script."""

    def __init__(self, errors, script):
        self.errors, self.script, self.steps, self.fits = errors, list(script), [], []

    def fit(self, inv):
        self.fits.append(tuple(inv))
        return ("P", tuple(inv)), self.errors[tuple(inv)]

    def _step(self, name, inv, P):
        self.steps.append((name, tuple(inv)))
        assert P == ("P", tuple(inv))  # the projector of the current order
        return np.array(self.script.pop(0))

    def slots(self, inv, P):
        return self._step("slots", inv, P)

    def assign(self, inv, P):
        return self._step("assign", inv, P)


I4 = (0, 1, 2, 3)
SWAP01, SWAP23, ROT = (1, 0, 2, 3), (0, 1, 3, 2), (1, 2, 3, 0)


def test_one_start_slots_then_polish():
    errs = {I4: 1.0, SWAP01: 0.5, (1, 0, 3, 2): 0.4}
    run = _ScriptedRun(errs, [SWAP01, I4, SWAP23, I4, I4, I4])
    inv, errors = fit_mod._run_start(run, np.arange(4), "slots+assign", 10, 0.1)
    assert tuple(inv) == (1, 0, 3, 2) and errors == [1.0, 0.5, 0.5, 0.4, 0.4]
    assert [s for s, _ in run.steps] == ["slots", "slots", "assign", "slots", "assign", "slots"]
    assert run.steps[2] == ("assign", SWAP01) and run.steps[3] == ("slots", (1, 0, 3, 2))
    assert run.script == []
    # an identity step is skipped: no refit
    assert run.fits == [I4, SWAP01, (1, 0, 3, 2)]


@pytest.mark.parametrize("rule", ["slots", "assign"])
def test_one_start_of_a_single_phase_rule_stops_when_it_stalls(rule):
    errs = {I4: 1.0, SWAP01: 0.5}
    run = _ScriptedRun(errs, [SWAP01, I4])
    inv, errors = fit_mod._run_start(run, np.arange(4), rule, 10, 0.1)
    assert tuple(inv) == SWAP01 and errors == [1.0, 0.5, 0.5]
    assert [s for s, _ in run.steps] == [rule, rule]


def test_one_start_guard_takes_equal_errors_and_refuses_larger_ones():
    # the step's order composes with the current one: inv[g]
    inv0 = np.array([2, 0, 3, 1])
    g = np.array(ROT)
    errs = {tuple(inv0): 1.0, tuple(inv0[g]): 1.0, tuple(inv0[g][g]): 1.5}
    run = _ScriptedRun(errs, [ROT, ROT])
    inv, errors = fit_mod._run_start(run, inv0, "assign", 2, -1.0)  # tol < 0: never stops
    assert tuple(inv) == tuple(inv0[g]) and errors == [1.0, 1.0, 1.0]
    assert run.steps == [("assign", tuple(inv0)), ("assign", tuple(inv0[g]))]


def test_one_start_tolerance_is_relative_and_inclusive():
    errs = {I4: 1.0, SWAP01: 0.9, (1, 0, 3, 2): 0.8}
    # a gain of exactly tol·prev stops (1.0 → 0.9 with tol = 0.1 would stop at the first)
    run = _ScriptedRun(errs, [SWAP01, SWAP23])
    inv, errors = fit_mod._run_start(run, np.arange(4), "slots", 10, 0.125)
    assert tuple(inv) == SWAP01 and errors == [1.0, 0.9]
    run = _ScriptedRun(errs, [SWAP01, SWAP23, I4])
    inv, errors = fit_mod._run_start(run, np.arange(4), "slots", 10, 0.0)
    assert errors == [1.0, 0.9, 0.8, 0.8] and len(run.steps) == 3
    run = _ScriptedRun(errs, [])
    assert fit_mod._run_start(run, np.arange(4), "slots", 0, 0.0)[1] == [1.0]
    run = _ScriptedRun(errs, [SWAP01])
    assert fit_mod._run_start(run, np.arange(4), "slots", 1, 0.0)[1] == [1.0, 0.9]


def test_a_slots_sweep_skips_identity_assignments(monkeypatch):
    """When the LSAP of a slot keeps every candidate in place, the sweep moves nothing and
    does no reordering work (no argsort of the solution)."""
    W = torch.randn(12, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    run = fit_mod._GramRun(W, fit_mod.column_gram(W), 2, 1, "scipy", 1.0)
    P, _ = run.fit(np.arange(8))
    counted = []

    class _Np:
        def __getattr__(self, name):
            return getattr(np, name)

        def argsort(self, a, *args, **kwargs):
            counted.append(1)
            return np.argsort(a, *args, **kwargs)

    monkeypatch.setattr(fit_mod, "np", _Np())
    monkeypatch.setattr(run, "solve", lambda cost: np.arange(4))
    assert run.slots(np.arange(8), P).tolist() == list(range(8)) and counted == []
    monkeypatch.setattr(run, "solve", lambda cost: np.array([1, 0, 2, 3]))
    order = run.slots(np.arange(8), P)
    assert len(counted) == 2 and sorted(order.tolist()) == list(range(8))


# ------------------------------------------------------------------ gram_column_fit
def test_rank_may_equal_k():
    W = torch.randn(10, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    perm, errors = fit_mod.gram_column_fit(W, 3, 3, n_iter=1)
    assert sorted(perm.tolist()) == list(range(6)) and errors[-1] < 1e-7  # rank k: exact


def test_gram_column_fit_draws_restarts_from_its_seed(monkeypatch):
    W = torch.randn(20, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    rngs = _Spy(fit_mod.check_rng)
    monkeypatch.setattr(fit_mod, "check_rng", rngs)
    fit_mod.gram_column_fit(W, 2, n_iter=1)
    assert rngs.calls == [((None,), {})]
    starts = _Spy(fit_mod._run_start)
    monkeypatch.setattr(fit_mod, "_run_start", starts)
    fit_mod.gram_column_fit(W, 2, n_iter=1, n_restarts=3, seed=5)
    (gen,), kw = rngs.calls[1]
    assert isinstance(gen, np.random.Generator) and kw == {}
    ref = np.random.default_rng(5)
    want = [list(range(8)), ref.permutation(8).tolist(), ref.permutation(8).tolist()]
    assert [c[0][1].tolist() for c in starts.calls] == want
    # the best start wins; its column order is returned as tqla's col_perm (the inverse)
    results = [fit_mod._run_start(starts.calls[i][0][0], np.array(want[i]), *starts.calls[i][0][2:])
               for i in range(3)]  # fmt: skip
    best = min(range(3), key=lambda i: results[i][1][-1])
    perm, errors = fit_mod.gram_column_fit(W, 2, n_iter=1, n_restarts=3, seed=5)
    assert perm.tolist() == np.argsort(results[best][0]).tolist()
    assert errors == results[best][1]


# ------------------------------------------------------------------ permuted_table_fit
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16])
def test_permuted_table_fit_whole(dtype, monkeypatch):
    T = torch.randn(12, 8, generator=torch.Generator().manual_seed(3)).to(dtype)
    gram = _Spy(fit_mod.gram_column_fit)
    svd = _Spy(fit_mod.kron_svd)
    monkeypatch.setattr(fit_mod, "gram_column_fit", gram)
    monkeypatch.setattr(fit_mod, "kron_svd", svd)
    with _Record() as rec:
        A, B, cp, err = fit_mod.permuted_table_fit(T, 4, n_iter=2, seed=1)
    work = torch.float64 if dtype == torch.float64 else torch.float32
    ((args, kwargs),) = gram.calls
    assert args[0].dtype == work and torch.equal(args[0], T.to(work)) and args[1:] == (4, 1)
    assert kwargs == {"rule": None, "n_iter": 2, "tol": None, "n_restarts": 1, "seed": 1}
    perm, errors = fit_mod.gram_column_fit(T.to(work), 4, 1, n_iter=2, seed=1)
    ((args, kwargs),) = svd.calls
    assert isinstance(args[0], np.ndarray) and args[0].dtype == np.dtype(str(work)[6:])
    np.testing.assert_array_equal(args[0], T.to(work).numpy()[:, np.argsort(perm)])
    assert args[1] == KroneckerShape((12, 2), (1, 4)) and args[2:] == (1,) and kwargs == {}
    K = kron_svd(args[0], args[1], 1)
    assert torch.equal(A, torch.from_numpy(np.ascontiguousarray(K.A))) and A.is_contiguous()
    assert torch.equal(B, torch.from_numpy(K.B)) and A.dtype == B.dtype == work
    assert cp.dtype == torch.int64 and cp.tolist() == perm.tolist()
    assert type(err) is float and err == errors[-1]
    assert [f for f in rec.factories if f[0] == "as_tensor"][-2:] == [
        ("as_tensor", {"device": T.device})] * 2  # fmt: skip


def test_the_table_fit_reports_the_last_error_of_the_best_start(monkeypatch):
    T = torch.randn(12, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    perm = np.array([1, 0, 2, 3, 5, 4, 7, 6])
    monkeypatch.setattr(fit_mod, "gram_column_fit", lambda *a, **k: (perm, [3.0, 2.0, 1.0]))
    A, B, cp, err = fit_mod.permuted_table_fit(T, 2)
    assert err == 1.0 and cp.tolist() == perm.tolist()
    K = kron_svd(T.numpy()[:, np.argsort(perm)], ((12, 4), (1, 2)), 1)
    assert torch.equal(A, torch.from_numpy(K.A)) and torch.equal(B, torch.from_numpy(K.B))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_every_tensor_of_the_gram_fit_stays_on_the_cuda_device():
    T = torch.randn(30, 8, device="cuda")
    A, B, cp, err = fit_mod.permuted_table_fit(T, 2, n_iter=2)
    assert A.device.type == B.device.type == cp.device.type == "cuda"
    W = torch.kron(torch.randn(30, 4), torch.randn(1, 2)).cuda() + 1e-7
    perm, errors = fit_mod.gram_column_fit(W, 2, n_iter=1)  # the direct error route
    assert errors[-1] < 1e-3
