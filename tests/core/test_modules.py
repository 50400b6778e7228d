"""The Sparsifier on every supported layer type (Linear, Conv1d, Conv2d, Embedding), tied weights, heads."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import sparsecraft
from sparsecraft import SparsecraftError, Sparsifier, get_pattern
from sparsecraft.models import TinyTransformer


class Mixed(nn.Module):
    """Embedding -> Conv1d -> Conv2d -> Linear on token inputs ``(N, 8)`` -> logits ``(N, 12)``."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(20, 16)      # reduction dim 16
        self.conv1 = nn.Conv1d(16, 8, 3, padding=1)  # 8 x (16*3 = 48)
        self.conv2 = nn.Conv2d(4, 8, 3, padding=1)   # 8 x (4*3*3 = 36)
        self.fc = nn.Linear(128, 12)         # 12 x 128

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.conv1(self.emb(tokens).transpose(1, 2))        # (N, 8, 8)
        h = self.conv2(torch.relu(h).reshape(-1, 4, 4, 4))        # (N, 8, 4, 4)
        return self.fc(torch.relu(h).flatten(1))


SHAPES = {"emb.weight": (20, 16), "conv1.weight": (8, 16, 3), "conv2.weight": (8, 4, 3, 3), "fc.weight": (12, 128)}
GROUP = {"unstructured": (1, 1), "block2x4": (2, 4), "channel": (1, None)}  # (rows, cols) of one group


def _mixed() -> Mixed:
    torch.manual_seed(0)
    return Mixed()


def _tokens(n: int = 6) -> torch.Tensor:
    return torch.randint(0, 20, (n, 8), generator=torch.Generator().manual_seed(3))


def _train_attached(model: nn.Module, sp: Sparsifier, opt: torch.optim.Optimizer, n: int, steps: int,
                    seed: int) -> dict[str, torch.Tensor]:
    """Attach ``sp`` to ``opt``, take ``steps`` cross-entropy steps on ``n`` random token sequences
    and return the masks as they were before training."""
    masks = {k: v.clone() for k, v in sp.masks.items()}
    sp.attach(opt)
    x, y = _tokens(n), torch.randint(0, 12, (n,), generator=torch.Generator().manual_seed(seed))
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return masks


def _kept(spec: str, shape: tuple[int, ...], sparsity: float) -> int:
    rows, cols = shape[0], int(torch.Size(shape[1:]).numel())
    if ":" in spec:
        n, m = map(int, spec.split(":"))
        return rows * cols // m * n
    r, c = GROUP[spec]
    c = c or cols
    groups = rows // r * (cols // c)
    return (groups - round(sparsity * groups)) * r * c


@pytest.mark.parametrize("spec", ["unstructured", "2:4", "block2x4", "channel"])
def test_every_layer_type_exact_counts_and_masked_forward(spec):
    model = _mixed()
    reference = copy.deepcopy(model)
    sp = sparsecraft.prune(model, sparsity=0.6, pattern=spec, allocation="uniform")
    assert list(sp.masks) == list(SHAPES)
    pattern = get_pattern(spec)
    with torch.no_grad():
        for name, mask in sp.masks.items():
            assert tuple(mask.shape) == SHAPES[name]
            assert int(mask.sum()) == _kept(spec, SHAPES[name], 0.6), name
            pattern.validate(mask)
            assert int(torch.count_nonzero(model.get_parameter(name)[~mask])) == 0
            reference.get_parameter(name).mul_(mask)
    x = _tokens()
    assert torch.equal(model(x), reference(x))  # masked module == manually masked copy, bit for bit


def test_every_layer_type_training_and_round_trip(tmp_path):
    model = _mixed()
    sp = sparsecraft.prune(model, sparsity=0.7, pattern="unstructured", allocation="erk")
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    masks = _train_attached(model, sp, opt, n=16, steps=10, seed=4)
    for name, mask in masks.items():
        p = model.get_parameter(name)
        assert int(torch.count_nonzero(p[~mask])) == 0
        assert int(torch.count_nonzero(opt.state[p]["momentum_buffer"][~mask])) == 0
    path = tmp_path / "mixed.safetensors"
    sp.save(str(path))
    fresh = _mixed()
    sp2 = Sparsifier.load(str(path), fresh)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), fresh.state_dict().values()))
    assert all(torch.equal(masks[k], v) for k, v in sp2.masks.items()) and sp2.masks.keys() == masks.keys()
    assert torch.equal(model(_tokens(16)), fresh(_tokens(16)))


def test_wanda_scores_per_layer_type():
    model = _mixed()
    x = _tokens(5)
    from sparsecraft.criteria import compute_scores
    from sparsecraft.target import find_targets

    targets = find_targets(model)
    scores = compute_scores("wanda", model, targets, calib=x)
    with torch.no_grad():
        e = model.emb(x)
        h1 = torch.relu(model.conv1(e.transpose(1, 2))).reshape(-1, 4, 4, 4)
        h2 = torch.relu(model.conv2(h1)).flatten(1)
    counts = torch.bincount(x.reshape(-1), minlength=20).float()
    expected = {
        "emb.weight": model.emb.weight.abs() * counts.sqrt()[:, None],
        "conv1.weight": model.conv1.weight.abs() * e.square().sum((0, 1)).sqrt()[None, :, None],
        "conv2.weight": model.conv2.weight.abs() * h1.square().sum((0, 2, 3)).sqrt()[None, :, None, None],
        "fc.weight": model.fc.weight.abs() * h2.square().sum(0).sqrt()[None, :],
    }
    for name, ref in expected.items():
        torch.testing.assert_close(scores[name], ref.detach(), rtol=1e-5, atol=1e-6)


class Tied(nn.Module):
    """A language model whose output projection shares the embedding matrix."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(30, 8)
        self.mid = nn.Linear(8, 8)
        self.out = nn.Linear(8, 30, bias=False)
        self.out.weight = self.embed.weight

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.mid(self.embed(tokens))))


def test_tied_weights_get_one_mask(tmp_path):
    torch.manual_seed(0)
    model = Tied()
    sp = sparsecraft.prune(model, sparsity=0.5, allocation="uniform")
    assert list(sp.masks) == ["embed.weight", "mid.weight"]  # the shared matrix once, not twice
    assert sp.report()[-1]["kept"] == 120 + 32
    assert int(torch.count_nonzero(model.embed.weight)) == 120 == int(torch.count_nonzero(model.out.weight))
    path = tmp_path / "tied.safetensors"
    sp.save(str(path))
    fresh = Tied()
    Sparsifier.load(str(path), fresh)
    assert fresh.out.weight is fresh.embed.weight and torch.equal(fresh.out.weight, model.out.weight)


def test_head_pattern_keeps_whole_heads_of_tiny_transformer():
    torch.manual_seed(0)
    model = TinyTransformer(vocab_size=50, num_classes=5, d_model=32, num_heads=4, num_layers=2)
    head_dim = model.blocks[0].attn.head_dim
    assert head_dim == 8
    # make head h of every projection have L1 norm proportional to a known order
    order = torch.tensor([3.0, 1.0, 4.0, 2.0])
    with torch.no_grad():
        for block in model.blocks:
            for proj in (block.attn.q_proj, block.attn.k_proj, block.attn.v_proj):
                proj.weight.copy_(proj.weight.sign() * order.repeat_interleave(head_dim)[:, None])
    qkv = ["blocks.*.attn.q_proj", "blocks.*.attn.k_proj", "blocks.*.attn.v_proj"]
    sp = sparsecraft.prune(model, sparsity=0.5, pattern=f"head{head_dim}", layers=qkv, allocation="uniform")
    assert len(sp.masks) == 6
    for name, mask in sp.masks.items():
        per_head = mask.reshape(4, head_dim * 32)
        assert bool((per_head.all(1) | ~per_head.any(1)).all()), name  # each head all kept or all dropped
        assert per_head.all(1).tolist() == [True, False, True, False], name  # the two weakest heads go
        assert int(torch.count_nonzero(model.get_parameter(name))) == 2 * head_dim * 32
    # global allocation across layers drops exactly half of all 24 heads
    torch.manual_seed(1)
    model2 = TinyTransformer(vocab_size=50, num_classes=5, d_model=32, num_heads=4, num_layers=2)
    sp2 = sparsecraft.prune(model2, sparsity=0.5, pattern="head8", layers=qkv, allocation="global")
    assert sum(int(m.reshape(4, -1).all(1).sum()) for m in sp2.masks.values()) == 12
    with pytest.raises(SparsecraftError, match="rows must be divisible by 12"):
        sparsecraft.prune(model2, sparsity=0.5, pattern="head12", layers=["blocks.0.attn.q_proj"])


@pytest.mark.parametrize("groups", [1, 2, 4])
def test_wanda_on_grouped_and_depthwise_conv(groups):
    from sparsecraft.criteria import compute_scores
    from sparsecraft.target import find_targets

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(4, 8, 3, groups=groups))
    x = torch.randn(3, 4, 6, 6, generator=torch.Generator().manual_seed(1))
    scores = compute_scores("wanda", model, find_targets(model), calib=x)["0.weight"]
    w = model[0].weight.detach()
    norms = x.square().sum((0, 2, 3)).sqrt()
    in_per_group, out_per_group = 4 // groups, 8 // groups
    expected = torch.empty_like(w)
    for o in range(8):
        for j in range(in_per_group):
            expected[o, j] = w[o, j].abs() * norms[(o // out_per_group) * in_per_group + j]
    torch.testing.assert_close(scores, expected, rtol=1e-5, atol=1e-6)
    sp = sparsecraft.prune(model, 0.5, criterion="wanda", calib=x)
    assert sp.report()[-1]["kept"] == w.numel() // 2


def test_frozen_layers_can_be_pruned():
    model = _mixed()
    model.emb.weight.requires_grad_(False)  # e.g. frozen embeddings while fine-tuning the rest
    sp = sparsecraft.prune(model, sparsity=0.5, allocation="uniform")
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    masks = _train_attached(model, sp, opt, n=8, steps=3, seed=5)
    for name, mask in masks.items():
        assert int(torch.count_nonzero(model.get_parameter(name)[~mask])) == 0, name
    assert int(model.emb.weight.count_nonzero()) == 160


@pytest.mark.parametrize("criterion", ["snip", "taylor", "movement"])
def test_gradient_criteria_on_language_model(criterion):
    torch.manual_seed(0)
    model = TinyTransformer(num_classes=40, vocab_size=40, d_model=16, num_heads=2, num_layers=1, causal=True)
    x = torch.randint(0, 40, (3, 10), generator=torch.Generator().manual_seed(2))
    y = torch.roll(x, -1, dims=1)
    sp = sparsecraft.prune(model, sparsity=0.5, criterion=criterion, calib=(x, y), allocation="uniform")
    assert sp.report()[-1]["kept"] == sp.report()[-1]["params"] // 2
    # the score is built from the per-token loss, as a manual computation gives
    torch.manual_seed(0)
    ref = TinyTransformer(num_classes=40, vocab_size=40, d_model=16, num_heads=2, num_layers=1, causal=True)
    F.cross_entropy(ref(x).reshape(-1, 40), y.reshape(-1)).backward()
    wg = ref.head.weight.detach() * ref.head.weight.grad
    manual = {"snip": wg.abs(), "taylor": wg.square(), "movement": -wg}[criterion]
    expected = get_pattern("unstructured").mask_for_sparsity(manual, 0.5)
    assert torch.equal(sp.masks["head.weight"], expected)
