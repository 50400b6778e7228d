import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sparsecraft.errors import SparsecraftError
from sparsecraft.models import MODELS, TinyViT, build_model
from sparsecraft.models.vit import attend_to_keys, local_window_keys


def test_vit_is_registered_and_patches_are_row_major():
    assert "vit" in MODELS.names()
    model = build_model("vit", num_classes=3, in_channels=1, image_size=4, patch_size=2, upsample=1)
    x = torch.arange(16.0).view(1, 1, 4, 4)
    patches = model.patches(x)
    assert patches.shape == (1, 4, 4)
    assert torch.equal(patches[0, 1], torch.tensor([2.0, 3.0, 6.0, 7.0]))  # top-right 2x2 patch
    assert model(torch.randn(5, 1, 4, 4)).shape == (5, 3)


def test_upsampled_digits_give_64_tokens():
    model = TinyViT(10, in_channels=1, image_size=8, patch_size=2, upsample=2, d_model=16, num_heads=2, num_layers=1)
    assert model.num_tokens == 64 and model.patches(torch.randn(2, 1, 8, 8)).shape == (2, 64, 4)


@settings(max_examples=20, deadline=None)
@given(t=st.integers(1, 12), b=st.integers(1, 12), seed=st.integers(0, 50))
def test_attention_over_key_sets_matches_masked_dense(t, b, seed):
    b = min(b, t)
    gen = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(2, 3, t, 4, generator=gen) for _ in range(3))
    keys = torch.rand(2, 3, t, t, generator=gen).argsort(-1)[..., :b]
    got = attend_to_keys(q, k, v, keys)
    mask = torch.zeros(2, 3, t, t, dtype=torch.bool).scatter_(-1, keys, True)
    scores = (q @ k.transpose(-1, -2) / math.sqrt(4)).masked_fill(~mask, float("-inf"))
    assert torch.allclose(got, scores.softmax(-1) @ v, atol=1e-5)


def test_all_keys_equal_dense_attention():
    model = TinyViT(4, 1, 4, patch_size=1, upsample=1, d_model=8, num_heads=2, num_layers=2)
    x = torch.randn(3, 1, 4, 4)
    dense = model(x)
    everything = torch.arange(16).expand(16, 16)
    for attn in model.attentions():
        attn.set_selector(lambda a, xx, q, k: everything.expand(q.shape[0], q.shape[1], 16, 16))
    assert torch.allclose(model(x), dense, atol=1e-5)


def test_local_window_keys_are_nearest_patches():
    keys = local_window_keys(3, 5)
    assert keys.shape == (9, 5)
    assert set(keys[4].tolist()) == {4, 1, 3, 5, 7}  # the centre and its 4 neighbours
    assert keys[0, 0] == 0 and set(keys[0, :3].tolist()) == {0, 1, 3}
    with pytest.raises(SparsecraftError, match=r"budget must be in \[1, 9\]"):
        local_window_keys(3, 10)


def test_bad_vit_arguments():
    with pytest.raises(SparsecraftError, match="patch_size 3 does not divide"):
        TinyViT(10, 1, 8, patch_size=3, upsample=1)
    model = TinyViT(10, 1, 8)
    with pytest.raises(SparsecraftError, match=r"expects images \(N, C, 8, 8\)"):
        model(torch.randn(2, 1, 6, 6))


def test_vit_for_data_accepts_square_images_only():
    from sparsecraft.data import load_dataset
    from sparsecraft.models import build_from_spec, model_for_data, model_spec

    digits = load_dataset("digits")
    model = model_for_data("vit", digits, d_model=16, num_heads=2, num_layers=1)
    assert model(digits.test_x[:3]).shape == (3, 10)
    rebuilt = build_from_spec(model_spec("vit", digits, d_model=16, num_heads=2, num_layers=1))
    assert rebuilt.state_dict().keys() == model.state_dict().keys()
    with pytest.raises(SparsecraftError, match=r"needs square images shaped \(C, S, S\)"):
        model_for_data("vit", load_dataset("mnist1d"))
    with pytest.raises(SparsecraftError, match="does not support 'lm'"):
        model_for_data("vit", load_dataset("text", seq_len=16))
