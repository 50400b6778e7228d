"""scikit-learn's parameter protocol on every coding estimator: get_params/set_params, clone, GridSearchCV."""
import inspect
import warnings

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.utils import estimator_checks

import sparsecraft.coding as coding
from sparsecraft.coding import (
    IHT,
    OMP,
    SBL,
    BinarySparseCoding,
    ConvSparseCoding,
    DictionaryLearning,
    KroneckerSBL,
    Lasso,
    LDPSparseRegression,
    SparseEncoder,
    SparseUnmixing,
    SpikeAndSlabSparseCoding,
    synthetic_mixture,
)
from sparsecraft.coding._params import ParamsMixin
from sparsecraft.errors import SparsecraftError

RNG = np.random.default_rng(0)
X = RNG.standard_normal((40, 12))
Y = X[:, [1, 5]] @ np.array([2.0, -1.0]) + 0.01 * RNG.standard_normal(40)
DICT = RNG.standard_normal((6, 12))
A_KRON, B_KRON = RNG.standard_normal((6, 8)), RNG.standard_normal((5, 8))
Y_KRON = np.kron(A_KRON, B_KRON)[:, [3, 20]] @ np.array([1.0, -2.0])
LIBRARY, PIXELS, _ = synthetic_mixture(n_bands=30, n_library=10, n_active=3, n_pixels=20, random_state=0)
IMAGES = RNG.standard_normal((3, 12, 12))

# one configured estimator per class and the data its fit takes
CASES = {
    "Lasso": (lambda: Lasso(alpha=0.05, fit_intercept=False), (X, Y)),
    "IHT": (lambda: IHT(1), (X, Y)),  # k = 1: scikit-learn's checks pass one feature at times
    "OMP": (lambda: OMP(n_nonzero_coefs=1), (X, Y)),
    "SBL": (lambda: SBL(noise_var=1e-4, max_iter=50), (X, Y)),
    "KroneckerSBL": (lambda: KroneckerSBL(noise_var=1e-6, max_iter=30), (A_KRON, B_KRON, Y_KRON)),
    "LDPSparseRegression": (lambda: LDPSparseRegression(1, epsilon=0.5, random_state=0), (X, Y)),
    "SparseEncoder": (lambda: SparseEncoder(DICT, method="omp", k=2), (X,)),
    "DictionaryLearning": (lambda: DictionaryLearning(4, method="omp", k=1, n_epochs=1, random_state=0), (X,)),
    "BinarySparseCoding": (lambda: BinarySparseCoding(4, n_iter=4, random_state=0), (X,)),
    "SpikeAndSlabSparseCoding": (lambda: SpikeAndSlabSparseCoding(4, n_iter=4, random_state=0), (X,)),
    "ConvSparseCoding": (lambda: ConvSparseCoding([3, 3, 5], n_steps=2, batch_size=2, code_iter=5, random_state=0),
                         (IMAGES,)),
    "SparseUnmixing": (lambda: SparseUnmixing(LIBRARY, lam=0.01, max_iter=50), (PIXELS,)),
}
# estimators whose fit takes a plain (n_samples, n_features) X (and y): scikit-learn's generic checks apply
STANDARD = ["Lasso", "IHT", "OMP", "SBL", "LDPSparseRegression", "DictionaryLearning", "BinarySparseCoding",
            "SpikeAndSlabSparseCoding"]


def _fitted(est):
    """Public fitted attributes (trailing underscore), tensors as arrays."""
    out = {}
    for key, value in vars(est).items():
        if key.endswith("_") and not key.startswith("_"):
            items = value if isinstance(value, list) else [value]
            out[key] = [v.numpy() if isinstance(v, torch.Tensor) else np.asarray(v) for v in items]
    return out


def _same(a, b):
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.array_equal(a, b)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def _result(est, data):
    """What the estimator computed: its fitted attributes, plus transform/predict output where defined."""
    out = _fitted(est)
    if isinstance(est, SparseEncoder):
        out["transform"] = [est.transform(data[0])]
    return out


def test_every_estimator_has_a_case():
    estimators = {name for name in coding.__all__ if hasattr(getattr(coding, name), "fit")}
    assert estimators == set(CASES)
    assert all(issubclass(getattr(coding, name), ParamsMixin) for name in estimators)


@pytest.mark.parametrize("name", sorted(CASES))
def test_params_are_the_init_arguments_stored_unchanged(name):
    make, _ = CASES[name]
    est = make()
    cls = type(est)
    init = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    params = est.get_params()
    assert list(params) == init
    rebuilt = cls(**params)
    assert all(getattr(rebuilt, key) is value for key, value in params.items())


@pytest.mark.parametrize("name", sorted(CASES))
def test_clone_is_unfitted_with_equal_params_and_fits_the_same(name):
    make, data = CASES[name]
    est = make().fit(*data)
    copy = clone(est)
    assert type(copy) is type(est) and copy is not est
    assert _fitted(copy) == {}
    params, copied = est.get_params(), copy.get_params()
    assert params.keys() == copied.keys()
    assert all(_same(params[k], copied[k]) for k in params)
    first = _result(est, data)
    second = _result(copy.fit(*data), data)
    assert first.keys() == second.keys() and first
    for key in first:
        for a, b in zip(first[key], second[key]):
            np.testing.assert_allclose(b, a, rtol=1e-10, atol=1e-12, err_msg=f"{name}.{key}")


@pytest.mark.parametrize("name", sorted(CASES))
def test_set_params_round_trip_and_unknown_name(name):
    make, _ = CASES[name]
    source, target = make(), make()
    params = source.get_params()
    new = {key: object() for key in params}  # any value: parameters are only checked by fit
    assert target.set_params(**new) is target
    assert all(target.get_params()[key] is value for key, value in new.items())
    target.set_params(**params)
    assert all(target.get_params()[key] is value for key, value in params.items())
    with pytest.raises(SparsecraftError, match=f"{type(source).__name__} has no parameter 'nope'; valid parameters: ") \
            as info:
        target.set_params(nope=1)
    assert "\n" not in str(info.value) and all(key in str(info.value) for key in params)


@pytest.mark.parametrize("make", [
    lambda: SparseEncoder(np.nan),
    lambda: SparseEncoder(DICT, method="l2"),
    lambda: SparseUnmixing("not a library"),
    lambda: ConvSparseCoding(4),
    lambda: ConvSparseCoding([4]),
    lambda: Lasso(alpha=-1.0),
])
def test_bad_parameters_are_reported_by_fit_not_init(make):
    est = make()  # constructing never checks
    data = {SparseEncoder: (X,), SparseUnmixing: (PIXELS,), ConvSparseCoding: (IMAGES,), Lasso: (X, Y)}[type(est)]
    with pytest.raises(SparsecraftError):
        est.fit(*data)


def test_conv_refit_after_changing_the_bank():
    est = CASES["ConvSparseCoding"][0]()
    first = [k.clone() for k in est.fit(IMAGES).kernels_]
    assert [k.shape[0] for k in est.set_params(kernel_sizes=(5,)).fit(IMAGES).kernels_] == [1]
    again = est.set_params(kernel_sizes=[3, 3, 5]).fit(IMAGES).kernels_
    assert all(torch.equal(a, b) for a, b in zip(first, again))   # fit does not depend on an earlier fit


def test_nested_parameters_of_an_estimator_parameter():
    class Wrapper(ParamsMixin):
        def __init__(self, inner, scale=1.0):
            self.inner, self.scale = inner, scale

    wrapper = Wrapper(Lasso(alpha=0.3))
    assert wrapper.get_params(deep=False) == {"inner": wrapper.inner, "scale": 1.0}
    assert wrapper.get_params()["inner__alpha"] == 0.3
    wrapper.set_params(inner__alpha=0.1, scale=2.0)
    assert wrapper.inner.alpha == 0.1 and wrapper.scale == 2.0
    with pytest.raises(SparsecraftError, match="no parameter 'scale__x'"):
        wrapper.set_params(scale__x=1)


def test_grid_search_and_pipeline():
    search = GridSearchCV(Lasso(fit_intercept=False), {"alpha": [0.01, 10.0]}, cv=3,
                          scoring="neg_mean_squared_error").fit(X, Y)
    assert search.best_params_ == {"alpha": 0.01}
    pipe = make_pipeline(SparseEncoder(DICT, method="omp", k=1), Lasso(alpha=0.01))
    pipe.set_params(sparseencoder__k=2).fit(X, Y)
    assert pipe.steps[0][1].k == 2 and pipe.predict(X).shape == (40,)


PARAM_CHECKS = ["check_get_params_invariance", "check_set_params", "check_no_attributes_set_in_init",
                "check_parameters_default_constructible"]
FIT_CHECKS = ["check_dont_overwrite_parameters", "check_fit_idempotent", "check_estimators_overwrite_params",
              "check_dict_unchanged", "check_n_features_in"]


@pytest.mark.parametrize("check", PARAM_CHECKS + FIT_CHECKS)
def test_scikit_learn_estimator_checks(check):
    names = sorted(CASES) if check in PARAM_CHECKS else STANDARD
    for name in names:
        est = CASES[name][0]()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            getattr(estimator_checks, check)(name, est)
