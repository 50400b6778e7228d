import pytest
import torch
from torch import nn

from sparsecraft.data import DataSplits, load_dataset
from sparsecraft.errors import SparsecraftError
from sparsecraft.models import (
    MLP,
    MODELS,
    ResNet1d,
    ResNetCNN,
    SelfAttention,
    TinyTransformer,
    build_model,
    model_for_data,
)


def _spec(input_shape, num_classes=10, task="classification") -> DataSplits:
    empty = torch.empty(0)
    return DataSplits("fake", empty, empty, empty, empty, num_classes, input_shape, task)


def test_registry_names_and_unknown():
    assert MODELS.names() == ["cnn", "mlp", "transformer", "vit"]
    with pytest.raises(SparsecraftError, match="unknown model 'swin'.*cnn, mlp, transformer, vit"):
        build_model("swin")


def test_mlp_layer_sizes_and_output():
    model = build_model("mlp", in_features=64, num_classes=10, hidden=(32, 16, 8))
    shapes = [tuple(m.weight.shape) for m in model.modules() if isinstance(m, nn.Linear)]
    assert shapes == [(32, 64), (16, 32), (8, 16), (10, 8)]
    assert model(torch.randn(5, 1, 8, 8)).shape == (5, 10)
    assert isinstance(model, MLP)


@pytest.mark.parametrize(
    "dims,shape,conv,norm",
    [(2, (3, 8, 8), nn.Conv2d, nn.BatchNorm2d), (1, (3, 40), nn.Conv1d, nn.BatchNorm1d)],
)
def test_resnet_layers_and_residual_downsampling(dims, shape, conv, norm):
    model = ResNetCNN(in_channels=3, num_classes=7, channels=(8, 12, 16), blocks_per_stage=2, dims=dims)
    assert model(torch.randn(4, *shape)).shape == (4, 7)
    convs = [m for m in model.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d))]
    assert all(type(m) is conv for m in convs)
    assert sum(isinstance(m, norm) for m in model.modules()) == len(convs)
    # stem + 6 blocks x 2 convs + 2 projection shortcuts (8->12, 12->16)
    assert len(convs) == 1 + 12 + 2
    strides = [m.stride[0] for m in convs if m.kernel_size[0] == 1]
    assert strides == [2, 2]


def test_resnet1d_and_bad_dims():
    model = ResNet1d(in_channels=1, num_classes=10)
    assert model.dims == 1 and model(torch.randn(2, 1, 40)).shape == (2, 10)
    with pytest.raises(SparsecraftError, match="dims"):
        ResNetCNN(dims=3)
    assert isinstance(ResNet1d.for_data(_spec((1, 40))), ResNet1d)
    with pytest.raises(SparsecraftError, match="ResNet1d"):
        ResNet1d.for_data(_spec((1, 8, 8)))


def test_transformer_uses_plain_linears():
    model = TinyTransformer(num_classes=5, vocab_size=50, d_model=32, num_heads=4, num_layers=2)
    assert not any(isinstance(m, nn.MultiheadAttention) for m in model.modules())
    attn = [m for m in model.modules() if isinstance(m, SelfAttention)]
    assert len(attn) == 2 and attn[0].num_heads == 4 and attn[0].head_dim == 8
    for a in attn:
        assert all(isinstance(getattr(a, p), nn.Linear) for p in ("q_proj", "k_proj", "v_proj", "out_proj"))
    assert model(torch.randint(0, 50, (3, 11))).shape == (3, 5)
    with pytest.raises(SparsecraftError, match="divisible"):
        TinyTransformer(num_classes=5, vocab_size=50, d_model=30, num_heads=4)
    with pytest.raises(SparsecraftError, match="either vocab_size"):
        TinyTransformer(num_classes=5)
    with pytest.raises(SparsecraftError, match="max_len"):
        TinyTransformer(num_classes=5, vocab_size=50, max_len=4)(torch.zeros(1, 5, dtype=torch.long))


@pytest.mark.parametrize("causal", [False, True])
def test_attention_matches_torch_multihead(causal):
    torch.manual_seed(0)
    attn = SelfAttention(d_model=24, num_heads=3, causal=causal).eval()
    ref = nn.MultiheadAttention(24, 3, batch_first=True).eval()
    with torch.no_grad():
        ref.in_proj_weight.copy_(torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight]))
        ref.in_proj_bias.copy_(torch.cat([attn.q_proj.bias, attn.k_proj.bias, attn.v_proj.bias]))
        ref.out_proj.weight.copy_(attn.out_proj.weight)
        ref.out_proj.bias.copy_(attn.out_proj.bias)
    x = torch.randn(2, 9, 24)
    mask = torch.triu(torch.ones(9, 9, dtype=torch.bool), 1) if causal else None
    expected, _ = ref(x, x, x, attn_mask=mask, need_weights=False)
    torch.testing.assert_close(attn(x), expected, rtol=1e-5, atol=1e-5)


def test_removing_a_head_equals_zeroing_its_output_columns():
    torch.manual_seed(1)
    attn = SelfAttention(d_model=16, num_heads=4).eval()
    x = torch.randn(2, 6, 16)
    drop = slice(4, 8)  # head 1
    keep = torch.tensor([i for i in range(16) if not 4 <= i < 8])
    zeroed = SelfAttention(16, 4).eval()
    zeroed.load_state_dict(attn.state_dict())
    with torch.no_grad():
        zeroed.out_proj.weight[:, drop] = 0
    small = SelfAttention(16, 4).eval()
    small.load_state_dict(attn.state_dict())
    for name in ("q_proj", "k_proj", "v_proj"):
        old = getattr(attn, name)
        new = nn.Linear(16, 12)
        with torch.no_grad():
            new.weight.copy_(old.weight[keep])
            new.bias.copy_(old.bias[keep])
        setattr(small, name, new)
    small.out_proj = nn.Linear(12, 16)
    with torch.no_grad():
        small.out_proj.weight.copy_(attn.out_proj.weight[:, keep])
        small.out_proj.bias.copy_(attn.out_proj.bias)
    small.num_heads = 3
    torch.testing.assert_close(small(x), zeroed(x), rtol=1e-5, atol=1e-6)


def test_causal_lm_ignores_future_tokens():
    torch.manual_seed(0)
    model = TinyTransformer(
        num_classes=30, vocab_size=30, d_model=16, num_heads=2, causal=True, max_len=12
    ).eval()
    ids = torch.randint(0, 30, (2, 12))
    changed = ids.clone()
    changed[:, 7:] = (changed[:, 7:] + 1) % 30
    out, out2 = model(ids), model(changed)
    assert out.shape == (2, 12, 30)
    torch.testing.assert_close(out[:, :7], out2[:, :7])
    assert not torch.allclose(out[:, 7:], out2[:, 7:])


def test_patch_tokens_are_image_rows_and_signal_chunks():
    model = model_for_data("transformer", _spec((2, 8, 8)), d_model=16, num_heads=2)
    assert model.patch_size == 8 and model.max_len == 8
    seen = {}
    model.embed.register_forward_hook(lambda m, inp, out: seen.update(x=inp[0]))
    x = torch.randn(3, 2, 8, 8)
    model(x)
    assert seen["x"].shape == (3, 8, 16)
    assert torch.equal(seen["x"][1, 5], x[1, :, 5, :].reshape(-1))
    one_d = model_for_data("transformer", _spec((1, 40)), d_model=16, num_heads=2)
    assert one_d.patch_size == 5 and one_d(torch.randn(2, 1, 40)).shape == (2, 10)


@pytest.fixture(scope="module")
def datasets(digits):
    return {
        "digits": digits,
        "mnist1d": load_dataset("mnist1d", num_samples=100),
        "text": load_dataset("text", seq_len=16),
    }


@pytest.mark.parametrize("name", ["mlp", "cnn", "transformer"])
@pytest.mark.parametrize("dataset", ["digits", "mnist1d", "text"])
def test_model_for_every_dataset(name, dataset, datasets):
    data = datasets[dataset]
    if data.task == "lm" and name != "transformer":
        with pytest.raises(SparsecraftError, match="does not support 'lm'"):
            model_for_data(name, data)
        return
    model = model_for_data(name, data).eval()
    out = model(data.test_x[:4])
    expected = (4, 16, 256) if data.task == "lm" else (4, 10)
    assert out.shape == expected and torch.isfinite(out).all()


def test_same_seed_same_init():
    torch.manual_seed(5)
    a = build_model("cnn")
    torch.manual_seed(5)
    b = build_model("cnn")
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
