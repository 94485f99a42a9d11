"""tqla.hetero against its definitions (found by mutation testing; listed in
benchmarks/results/mutation_2026-11-30.md, third pass)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tqla
import tqla.spectral
from tqla.kron import KroneckerShape

CANDS = [((3, 4), (4, 3)), ((2, 2), (6, 6)), ((6, 6), (2, 2))]


@given(seed=st.integers(0, 2**16), norm=st.sampled_from(["fro", "spectral"]))
@settings(max_examples=4, deadline=None)
def test_half_precision_is_the_float32_fit_in_the_input_dtype(seed, norm):
    W = np.random.default_rng(seed).standard_normal((12, 12)).astype(np.float16)
    opts = {"p": (8.0,), "max_iter": 2}
    kw = {"rank": 2, "norm": norm, "n_sweeps": 1, "spectral_options": opts}
    H = tqla.kron_hetero(W, CANDS, **kw)
    ref = tqla.kron_hetero(W.astype(np.float32), CANDS, **kw)
    assert H.dtype == np.float16 and H.norm == norm
    assert H.errors == ref.errors and H.sweep_errors == ref.sweep_errors
    assert H.order == ref.order
    for K, R in zip(H.terms, ref.terms, strict=True):
        np.testing.assert_array_equal(K.A, R.A.astype(np.float16))
        np.testing.assert_array_equal(K.B, R.B.astype(np.float16))


def test_spectral_fits_get_the_documented_default_options(monkeypatch):
    seen = []
    real = tqla.spectral.kron_spectral

    def spy(*args, **kwargs):
        seen.append({k: kwargs[k] for k in ("p", "max_iter", "rng")})
        return real(*args, **{**kwargs, "p": (8.0,), "max_iter": 1})

    monkeypatch.setattr(tqla.spectral, "kron_spectral", spy)
    W = np.random.default_rng(0).standard_normal((12, 12))
    tqla.kron_hetero(W, CANDS, rank=1, norm="spectral", n_sweeps=0)
    assert seen and all(s == {"p": (8.0, 32.0, 128.0), "max_iter": 10, "rng": 0} for s in seen)
    seen.clear()
    tqla.kron_hetero(W, CANDS, rank=1, norm="spectral", n_sweeps=0,
                     spectral_options={"max_iter": 3})  # fmt: skip
    assert seen and all(s == {"p": (8.0, 32.0, 128.0), "max_iter": 3, "rng": 0} for s in seen)


@pytest.mark.parametrize("shapes", [KroneckerShape((3, 4), (4, 3)), "3x4", 12])
def test_a_single_shape_is_refused_with_the_rule(shapes):
    W = np.zeros((12, 12))
    with pytest.raises(TypeError, match=r"shapes must be a sequence of factor shapes"):
        tqla.kron_hetero(W, shapes, rank=1)
