import numpy as np
import pytest

from keras_rts import directions, methods
from tests import reference


def _tensors(seed, scale=1.0):
    rng = np.random.default_rng(seed)
    return [scale * rng.normal(size=s).astype("float32")
            for s in [(3, 4), (4,), (2, 2, 3)]]


def _np(tensors):
    return [np.asarray(t, np.float64) for t in tensors]


def test_global_norm_is_one_norm_over_all_tensors():
    t = _tensors(0)
    expected = np.sqrt(sum((a.astype(np.float64) ** 2).sum() for a in t))
    assert float(directions.global_norm(t)) == pytest.approx(expected, 1e-6)
    # Not the norm of any single tensor, nor the sum of per-tensor norms.
    assert expected != pytest.approx(sum(np.linalg.norm(a) for a in t))


def test_normalize_gives_unit_norm_and_keeps_zeros_finite():
    out = _np(directions.normalize(_tensors(1, scale=50.0)))
    assert reference.norm(out) == pytest.approx(1.0, 1e-6)
    zeros = [np.zeros((3,), "float32"), np.zeros((2, 2), "float32")]
    for t in directions.normalize(zeros):
        np.testing.assert_array_equal(np.asarray(t), 0.0)


@pytest.mark.parametrize("method", ["sam", "asam", "pugd"])
@pytest.mark.parametrize("radius", [0.0, 0.05, 2.5])
def test_perturbations_match_numpy(method, radius):
    grads, weights = _tensors(2), _tensors(3)
    expected = reference.perturbation(method, _np(grads), _np(weights), radius)
    got = methods.METHODS[method].epsilon(grads, weights, radius)
    for e, g in zip(expected, got):
        np.testing.assert_allclose(np.asarray(g), e, rtol=1e-5, atol=1e-7)
    assert reference.norm(_np(got)) == pytest.approx(
        radius if method != "asam" else reference.norm(expected), rel=1e-5)


def test_pugd_perturbation_is_zero_where_weights_are_zero():
    grads = _tensors(4)
    weights = _tensors(5)
    weights[1][:] = 0.0
    eps = directions.pugd_perturbation(grads, weights, 1.0)
    np.testing.assert_array_equal(np.asarray(eps[1]), 0.0)


def test_zero_gradient_gives_zero_perturbation():
    zeros = [np.zeros_like(t) for t in _tensors(6)]
    for method in ("sam", "asam", "pugd"):
        eps = methods.METHODS[method].epsilon(zeros, _tensors(7), 1.0)
        for e in eps:
            assert np.all(np.isfinite(np.asarray(e)))
            np.testing.assert_array_equal(np.asarray(e), 0.0)


def test_combine_and_weight_decay():
    gs, g, w = _tensors(8), _tensors(9), _tensors(10)
    for out, a, b in zip(directions.combine(gs, g, 0.3), gs, g):
        np.testing.assert_allclose(np.asarray(out), a + 0.3 * b, rtol=1e-6)
    for out, a, b in zip(directions.add_weight_decay(g, w, 5e-4), g, w):
        np.testing.assert_allclose(np.asarray(out), a + 5e-4 * b, rtol=1e-6)


def test_method_table_matches_spec():
    m = methods.METHODS
    assert sorted(m) == ["asam", "fsam", "gsam", "looksam", "msam", "pugd",
                         "sam", "sgd", "ugd", "wsam"]
    assert [m[k].passes for k in ("gsam", "wsam", "fsam", "looksam",
                                  "msam")] == [2, 2, 2, 1.2, 1]
    assert [m[k].normalize for k in ("sgd", "ugd", "sam", "asam", "pugd")] == [
        False, True, False, False, True]
    assert m["pugd"].default_grad_scale == 1.0
    assert m["sam"].default_grad_scale == m["asam"].default_grad_scale == 0.0
    assert m["sgd"].epsilon is None and m["ugd"].epsilon is None


def test_unknown_method_names_the_argument():
    with pytest.raises(ValueError, match="method='adam'"):
        methods.get_method("adam")
