"""Dictionary learning on image patches, and probabilistic sparse coding recovering a known dictionary."""
import numpy as np
import pytest
from sklearn.decomposition import MiniBatchDictionaryLearning

from sparsecraft.coding import (
    BinarySparseCoding,
    DictionaryLearning,
    SpikeAndSlabSparseCoding,
    image_patches,
    match_dictionaries,
    sparse_encode,
)
from sparsecraft.coding.probabilistic import truncated_states
from sparsecraft.errors import SparsecraftError


@pytest.fixture(scope="module")
def patches():
    return image_patches(8, 3000, random_state=0)


def test_image_patches_shape_and_normalization(patches):
    assert patches.shape == (3000, 64)
    np.testing.assert_allclose(patches.mean(axis=1), 0, atol=1e-12)
    assert (patches**2).mean() == pytest.approx(1.0)
    np.testing.assert_array_equal(image_patches(8, 3000, random_state=0), patches)


def test_learned_dictionary_matches_sklearn_quality_and_beats_random(patches):
    train, test = patches[:2500], patches[2500:]
    ours = DictionaryLearning(64, method="omp", k=4, n_epochs=2, batch_size=128, random_state=0).fit(train)
    ref = MiniBatchDictionaryLearning(64, alpha=1.0, batch_size=128, max_iter=2, fit_algorithm="cd",
                                      random_state=0).fit(train)
    rand = np.random.default_rng(0).standard_normal((64, 64))

    def err(D):
        C = sparse_encode(test, D / np.linalg.norm(D, axis=1, keepdims=True), "omp", k=4)
        return np.linalg.norm(C @ (D / np.linalg.norm(D, axis=1, keepdims=True)) - test) / np.linalg.norm(test)

    assert np.allclose(np.linalg.norm(ours.components_, axis=1), 1.0, atol=1e-6) or np.all(
        np.linalg.norm(ours.components_, axis=1) <= 1 + 1e-9)
    assert err(ours.components_) < 0.8 * err(rand)
    assert err(ours.components_) < 1.05 * err(ref.components_)


def bars(g=4, amp=5.0):
    W = []
    for i in range(g):
        for horizontal in (True, False):
            a = np.zeros((g, g))
            if horizontal:
                a[i, :] = 1
            else:
                a[:, i] = 1
            W.append(a.ravel())
    return np.array(W) * amp


def test_truncated_states_count():
    P = truncated_states(6, 3)
    assert P.shape == (1 + 6 + 15 + 20, 6) and P.sum(axis=1).max() == 3
    assert len({tuple(r) for r in P}) == len(P)


def test_binary_sparse_coding_recovers_bars_up_to_permutation():
    rng = np.random.default_rng(0)
    W = bars()
    S = (rng.random((600, 8)) < 2 / 8).astype(float)
    Y = S @ W + rng.standard_normal((600, 16))
    model = BinarySparseCoding(8, n_candidates=6, max_active=3, n_iter=40, n_init=2, random_state=0).fit(Y)
    perm, cos = match_dictionaries(model.components_, W)
    assert cos.min() > 0.98
    assert model.pi_ == pytest.approx(0.25, abs=0.05)
    assert np.diff(model.log_likelihood_[20:]).min() > -1e-6  # EM after annealing never decreases
    codes = model.transform(Y)
    assert np.mean((codes[:, perm] > 0.5) == S) > 0.95


def test_spike_and_slab_recovers_dictionary_and_slab():
    rng = np.random.default_rng(1)
    W = bars()
    S = rng.random((300, 8)) < 2 / 8
    Z = S * rng.normal(2.0, 0.5, (300, 8))
    Y = Z @ W / 5 + 0.3 * rng.standard_normal((300, 16))
    model = SpikeAndSlabSparseCoding(8, n_candidates=5, max_active=4, n_iter=25, random_state=0).fit(Y)
    perm, cos = match_dictionaries(model.components_, W)
    assert cos.min() > 0.99
    assert model.noise_var_ == pytest.approx(0.09, rel=0.25)
    codes = model.transform(Y)[:, perm]
    # support: posterior mean of s*z above half the learned slab mean
    assert np.mean((np.abs(codes) > 0.5 * np.abs(model.mu_[perm])) == S) > 0.97
    # values: codes times the per-atom scale (W and the slab are identifiable only up to scale)
    scale = np.sign((model.components_[perm] * W).sum(axis=1)) * np.linalg.norm(model.components_[perm], axis=1)
    assert np.corrcoef((codes * scale / np.linalg.norm(W / 5, axis=1)).ravel(), Z.ravel())[0, 1] > 0.97


def test_match_dictionaries_rejects_too_few_atoms():
    with pytest.raises(SparsecraftError, match="cannot be matched"):
        match_dictionaries(np.eye(3), np.eye(4))


def test_n_init_keeps_the_most_likely_restart():
    rng = np.random.default_rng(3)
    W = bars()
    Y = (rng.random((300, 8)) < 0.25) @ W + rng.standard_normal((300, 16))
    one = BinarySparseCoding(8, n_iter=15, anneal_iters=5, random_state=7).fit(Y)
    three = BinarySparseCoding(8, n_iter=15, anneal_iters=5, n_init=3, random_state=7).fit(Y)
    assert three.log_likelihood_[-1] >= one.log_likelihood_[-1]   # first restart == the single run
    assert three.score(Y) == pytest.approx(three.log_likelihood_[-1])
