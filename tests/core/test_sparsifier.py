import pytest
import torch
import torch.nn.functional as F

import sparsecraft
from sparsecraft import SparsecraftError, Sparsifier, read_checkpoint


def _train(model, opt, batch, steps):
    x, y = batch
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()


@pytest.mark.parametrize("make_opt", [
    lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=1e-3),
    lambda p: torch.optim.Adam(p, lr=1e-2),
    lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.1),
], ids=["sgd-momentum", "adam", "adamw"])
def test_masks_exact_through_100_steps(cnn, batch, make_opt):
    sp = sparsecraft.prune(cnn, sparsity=0.8, pattern="unstructured")
    before = {k: v.clone() for k, v in sp.masks.items()}
    opt = make_opt(cnn.parameters())
    sp.attach(opt)
    _train(cnn, opt, batch, 100)
    for name, t in sp.targets.items():
        assert torch.equal(sp.masks[name], before[name])
        assert int(torch.count_nonzero(t.param[~before[name]])) == 0
        for value in opt.state[t.param].values():
            if isinstance(value, torch.Tensor) and value.shape == t.param.shape:
                assert int(torch.count_nonzero(value[~before[name]])) == 0
    assert sp.report()[-1]["kept"] == sum(int(m.sum()) for m in before.values())


def test_nm_pattern_survives_training(cnn, batch):
    sp = sparsecraft.prune(cnn, pattern="2:4", keep_dense=["first"])
    opt = torch.optim.Adam(cnn.parameters(), lr=1e-2)
    sp.attach(opt)
    _train(cnn, opt, batch, 20)
    for name, t in sp.targets.items():
        sparsecraft.get_pattern("2:4").validate(t.param != 0)


def test_set_mask_resets_state_where_changed(cnn, batch):
    sp = sparsecraft.prune(cnn, sparsity=0.5, layers=["7"])
    opt = torch.optim.Adam(cnn.parameters(), lr=1e-2)
    sp.attach(opt)
    with sp.dense_grads():
        _train(cnn, opt, batch, 3)  # dense grads: state becomes non-zero everywhere
    name = "7.weight"
    old = sp.masks[name].clone()
    new = old.clone()
    grow = (~old).nonzero()[:5]
    drop = old.nonzero()[:5]
    new[tuple(grow.T)] = True
    new[tuple(drop.T)] = False
    sp.set_mask(name, new)
    changed = old ^ new
    p = sp.targets[name].param
    assert torch.equal(sp.masks[name], new)
    assert bool((p[changed] == 0).all())  # dropped weights zeroed, grown ones start at zero
    for key in ("exp_avg", "exp_avg_sq"):
        assert bool((opt.state[p][key][changed] == 0).all())
        assert bool((opt.state[p][key][~changed & new] != 0).any())


def test_finalize_bakes_masks(cnn):
    sp = sparsecraft.prune(cnn, sparsity=0.9)
    kept = sp.report()[-1]["kept"]
    model = sp.finalize()
    assert not hasattr(model[0], "weight_mask")
    assert sum(int(torch.count_nonzero(m.weight)) for m in model if hasattr(m, "weight") and m.weight.dim() > 1) <= kept
    w = model[7].weight.detach().clone()
    model[7].weight.grad = None
    model(torch.randn(2, 1, 8, 8)).sum().backward()
    assert bool((model[7].weight.grad[w == 0] != 0).any())  # hooks removed: gradients dense again


def test_save_load_round_trip_bit_exact(cnn, make_cnn, tmp_path):
    sp = sparsecraft.prune(cnn, sparsity=0.7, pattern="block4x1", keep_dense=["first", "last"])
    path = tmp_path / "ck.safetensors"
    sp.save(str(path), model_spec={"name": "custom", "kwargs": {}})
    fresh = make_cnn()
    with torch.no_grad():
        for p in fresh.parameters():
            p.add_(1.0)
    sp2 = Sparsifier.load(str(path), fresh)
    for (k, a), (_, b) in zip(cnn.state_dict().items(), fresh.state_dict().items()):
        assert torch.equal(a, b), k
    assert {k: v.tolist() for k, v in sp.masks.items()} == {k: v.tolist() for k, v in sp2.masks.items()}
    assert {k: str(v) for k, v in sp2.patterns.items()} == {"3.weight": "block4x1", "7.weight": "block4x1"}
    assert read_checkpoint(path).model_spec == {"name": "custom", "kwargs": {}}


def test_save_refuses_to_overwrite(cnn, tmp_path):
    sp = sparsecraft.prune(cnn, 0.5)
    path = tmp_path / "ck.safetensors"
    path.write_text("precious")
    with pytest.raises(SparsecraftError, match="already exists.*--force"):
        sp.save(str(path))
    assert path.read_text() == "precious"
    sp.save(str(path), force=True)
    assert read_checkpoint(path).masks.keys() == sp.masks.keys()
    assert [p.name for p in tmp_path.iterdir()] == ["ck.safetensors"]  # no temp files left


def test_corrupt_truncated_and_foreign_files(cnn, tmp_path):
    from safetensors.torch import save_file

    sp = sparsecraft.prune(cnn, 0.5)
    good = tmp_path / "good.safetensors"
    sp.save(str(good))
    data = good.read_bytes()
    cases = {
        "missing": (None, "not found"),
        "truncated": (data[: len(data) // 2], "corrupt or truncated"),
        "garbage": (b"\x00" * 64, "corrupt or truncated"),
    }
    flipped = bytearray(data)
    flipped[-3] ^= 0xFF
    cases["flipped"] = (bytes(flipped), "checksum mismatch")
    for name, (content, msg) in cases.items():
        path = tmp_path / f"{name}.safetensors"
        if content is not None:
            path.write_bytes(content)
        with pytest.raises(SparsecraftError, match=msg) as info:
            read_checkpoint(path)
        assert "\n" not in str(info.value)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(SparsecraftError, match="not written by sparsecraft"):
        read_checkpoint(foreign)


def test_load_into_wrong_model(cnn, tmp_path):
    sp = sparsecraft.prune(cnn, 0.5)
    path = tmp_path / "ck.safetensors"
    sp.save(str(path))
    other = torch.nn.Sequential(torch.nn.Linear(3, 3))
    with pytest.raises(SparsecraftError, match="does not fit this model"):
        Sparsifier.load(str(path), other)


def test_mask_shape_and_unknown_layer_errors(cnn):
    with pytest.raises(SparsecraftError, match="has shape"):
        Sparsifier(cnn, {"0.weight": torch.ones(3, 3, dtype=torch.bool)})
    with pytest.raises(SparsecraftError, match="no layer"):
        Sparsifier(cnn, {"nope.weight": torch.ones(3, dtype=torch.bool)})
