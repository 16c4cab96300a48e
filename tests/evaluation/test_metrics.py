"""The task metrics against scikit-learn and scipy, and their input errors."""

from __future__ import annotations

import numpy as np
import pytest

from gpt1.evaluation.metrics import accuracy, f1_score, matthews_corrcoef, pearson, spearman


# ---- metrics -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_match_scikit_learn_and_scipy(seed):
    sk = pytest.importorskip("sklearn.metrics")
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(seed)
    y, p = rng.integers(0, 2, 200), rng.integers(0, 2, 200)
    assert accuracy(y, p) == pytest.approx(sk.accuracy_score(y, p))
    assert f1_score(y, p) == pytest.approx(sk.f1_score(y, p))
    assert matthews_corrcoef(y, p) == pytest.approx(sk.matthews_corrcoef(y, p))
    y3, p3 = rng.integers(0, 3, 200), rng.integers(0, 3, 200)
    assert matthews_corrcoef(y3, p3) == pytest.approx(sk.matthews_corrcoef(y3, p3))
    a = rng.normal(size=300)
    b = a + rng.normal(size=300)
    a_tied, b_tied = np.round(a), np.round(b * 2) / 2  # ties, as STS-B's 0.2 steps give
    assert pearson(a, b) == pytest.approx(stats.pearsonr(a, b)[0])
    assert spearman(a_tied, b_tied) == pytest.approx(stats.spearmanr(a_tied, b_tied)[0])
    assert matthews_corrcoef(y, np.ones_like(y)) == 0.0 == sk.matthews_corrcoef(y, np.ones_like(y))


def test_metric_input_errors():
    with pytest.raises(ValueError, match="same length"):
        accuracy([1, 0], [1])
    with pytest.raises(ValueError, match="at least one"):
        accuracy([], [])
