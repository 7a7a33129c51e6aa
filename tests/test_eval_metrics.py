"""GLUE metrics against values worked out by hand (the arithmetic is in the comments)."""

import math

import pytest

from flexbert.eval import metrics as M

# t = 1 0 1 1 0 1 0 0 / p = 1 0 0 1 1 1 0 1: TP 3 (0,3,5), FP 2 (4,7), FN 1 (2), TN 2 (1,6)
T = [1, 0, 1, 1, 0, 1, 0, 0]
P = [1, 0, 0, 1, 1, 1, 0, 1]


def test_binary_classification():
    assert M.accuracy(T, P) == 5 / 8
    assert M.f1(T, P) == pytest.approx(2 * 3 / (2 * 3 + 2 + 1))  # 6/9
    # (TP*TN - FP*FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)) = (6 - 2) / sqrt(5*4*4*3)
    assert M.matthews_correlation(T, P) == pytest.approx(4 / math.sqrt(240))
    assert M.classification_metrics(T, P) == {"accuracy": 0.625, "f1": pytest.approx(2 / 3),
                                              "matthews_correlation": pytest.approx(0.2581988897)}


def test_multiclass():
    t, p = [0, 1, 2, 0, 1, 2], [0, 2, 1, 0, 0, 2]
    # c = 3 correct of s = 6; true counts (2, 2, 2), predicted counts (3, 1, 2)
    # (c*s - sum p_k t_k) / sqrt((s^2 - sum p_k^2)(s^2 - sum t_k^2)) = (18 - 12) / sqrt(22 * 24)
    assert M.matthews_correlation(t, p) == pytest.approx(6 / math.sqrt(528))
    # per-class F1: class 0 = 4/5, class 1 = 0, class 2 = 2/4 -> macro 1.3/3
    assert M.f1(t, p, num_labels=3) == pytest.approx(1.3 / 3)


def test_degenerate_and_perfect():
    assert M.matthews_correlation([1, 1, 1], [1, 1, 1]) == 0.0  # constant: defined as 0, not NaN
    assert M.matthews_correlation([0, 1, 0, 1], [1, 0, 1, 0]) == pytest.approx(-1.0)
    assert M.f1([0, 0], [0, 0]) == 0.0  # no positives at all
    assert M.pearson([1, 1, 1], [1, 2, 3]) == 0.0
    with pytest.raises(ValueError, match="2 labels but 3 predictions"):
        M.accuracy([0, 1], [0, 1, 1])


def test_pearson_and_spearman():
    x, y = [1, 2, 3, 4, 5], [2, 4, 5, 4, 5]
    # deviations (-2,-1,0,1,2) and (-2,0,1,0,1): sxy 6, sxx 10, syy 6
    assert M.pearson(x, y) == pytest.approx(6 / math.sqrt(60))
    # ranks of y with ties averaged: 1, 2.5, 4.5, 2.5, 4.5 -> sxy 7, sxx 10, syy 9
    assert M.ranks(y) == [1.0, 2.5, 4.5, 2.5, 4.5]
    assert M.spearman(x, y) == pytest.approx(7 / math.sqrt(90))
    assert M.spearman([1, 2, 3], [10, 100, 1000]) == pytest.approx(1.0)  # monotone, not linear
    assert M.regression_metrics(x, y) == {"pearson": pytest.approx(0.7745966692), "spearman": pytest.approx(0.7378647874)}
