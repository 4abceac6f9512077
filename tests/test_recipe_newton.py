"""The recipe's logistic regression (``logistic_newton``) minimises sklearn's objective: same optimum."""

import numpy as np
import pytest

from shared.reco.recipe import logistic_newton


@pytest.mark.parametrize("C", [0.01, 1.0, 100.0])
def test_newton_matches_sklearn(C):
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    n, f = 20_000, 12
    Z = rng.standard_normal((n, f))
    Z[:, 3] = 0.0  # a switched-off feature (features_off)
    true = rng.standard_normal(f)
    y = rng.random(n) < 1 / (1 + np.exp(-(Z @ true - 2.0)))
    w = rng.random(n) * 3
    w *= n / w.sum()
    coef, b, it = logistic_newton(Z, y, w, C)
    lr = LogisticRegression(C=C, max_iter=10_000, tol=1e-10).fit(Z, y, sample_weight=w)
    assert it < 50
    np.testing.assert_allclose(coef, lr.coef_.ravel(), atol=1e-4)
    assert abs(b - lr.intercept_[0]) < 1e-4
    assert coef[3] == 0.0


def test_newton_separable_stays_finite():
    Z = np.array([[-2.0], [-1.0], [1.0], [2.0]])
    y = np.array([0, 0, 1, 1], bool)
    coef, b, _ = logistic_newton(Z, y, np.ones(4), 1.0)
    assert np.isfinite(coef).all() and np.isfinite(b) and coef[0] > 0


def test_newton_single_class():
    Z = np.random.default_rng(1).standard_normal((50, 3))
    coef, b, _ = logistic_newton(Z, np.ones(50, bool), np.ones(50), 1.0)
    assert np.isfinite(coef).all() and np.isfinite(b) and b > 0


@pytest.mark.parametrize("n", [5, 32768, 70_001])
def test_blocked_hessian_is_the_float64_hessian_to_float32_precision(n):
    from shared.reco.recipe import _hessian

    rng = np.random.default_rng(n)
    A = rng.standard_normal((n, 9))
    A[:, -1] = 1.0
    s = rng.random(n) * 0.25
    exact = (A * s[:, None]).T @ A
    H = _hessian(np.ascontiguousarray(A.T, dtype=np.float32), s.astype(np.float32))
    assert H.dtype == np.float64
    np.testing.assert_allclose(H, exact, rtol=0, atol=1e-5 * np.abs(exact).max())


def test_newton_optimum_does_not_depend_on_the_hessian_blocks(monkeypatch):
    """The Hessian only steers the step (gradient and objective in float64): blocks of 1000 rows or one
    block of every row, the same optimum."""
    import shared.reco.recipe as R

    rng = np.random.default_rng(5)
    n, f = 70_000, 10
    Z = rng.standard_normal((n, f))
    y = rng.random(n) < 1 / (1 + np.exp(-(Z @ rng.standard_normal(f) - 1.5)))
    w = rng.random(n) * 2
    w *= n / w.sum()
    monkeypatch.setattr(R, "_HESSIAN_BLOCK", n)
    one = logistic_newton(Z, y, w, 1.0)
    monkeypatch.setattr(R, "_HESSIAN_BLOCK", 1000)
    blocked = logistic_newton(Z, y, w, 1.0)
    np.testing.assert_allclose(blocked[0], one[0], atol=1e-8)
    assert abs(blocked[1] - one[1]) < 1e-8
