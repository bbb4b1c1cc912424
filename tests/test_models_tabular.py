"""TabularValueFunction on a scikit-learn model."""

import numpy as np
import pytest

from spex_plugins.models import TabularValueFunction

sklearn = pytest.importorskip("sklearn", reason="the tabular tests use scikit-learn")


@pytest.fixture(scope="module")
def fitted():
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = load_breast_cancer(return_X_y=True)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(X, y)
    return model, X


def test_mean_mode(fitted):
    model, X = fitted
    f = TabularValueFunction(model.predict_proba, X[0], X, feature_names=None, batch_size=7)
    assert f.n == 30 and f.features[:2] == ["x0", "x1"]
    assert f.output == int(np.argmax(model.predict_proba(X[:1])[0]))
    np.testing.assert_array_equal(f(np.ones((1, 30), bool)),
                                  model.predict_proba(X[:1])[:, f.output])
    mask = np.ones(30, bool)
    mask[[2, 5]] = False
    (row,) = f.masked_inputs(mask[None])
    np.testing.assert_array_equal(row[mask], X[0][mask])
    np.testing.assert_allclose(row[[2, 5]], X[:, [2, 5]].mean(0))
    masks = np.random.default_rng(0).random((25, 30)) < 0.5
    np.testing.assert_allclose(f(masks), np.concatenate([f(m[None]) for m in masks]), atol=1e-12)


def test_sample_mode_and_1d_predict(fitted):
    model, X = fitted
    predict = model.decision_function  # 1-D output
    f = TabularValueFunction(predict, X[3], X, mode="sample", max_background=20)
    assert f.output is None and f.background.shape == (20, 30)
    np.testing.assert_allclose(f(np.ones((1, 30), bool)), predict(X[3:4]), rtol=1e-12)
    mask = np.zeros(30, bool)
    mask[0] = True
    rows = f.masked_inputs(mask[None])[0]
    np.testing.assert_array_equal(rows[:, 0], X[3, 0])
    np.testing.assert_array_equal(rows[:, 1:], f.background[:, 1:])
    np.testing.assert_allclose(f(mask[None]), [predict(rows).mean()], rtol=1e-12)
    masks = np.random.default_rng(1).random((9, 30)) < 0.5
    np.testing.assert_allclose(f(masks), np.concatenate([f(m[None]) for m in masks]), atol=1e-10)
    with pytest.raises(ValueError, match="background"):
        TabularValueFunction(predict, X[0], X[:, :5])
    with pytest.raises(ValueError, match="mode"):
        TabularValueFunction(predict, X[0], X, mode="median")
