"""The block-by-block pipeline on a tiny random BERT and a tiny causal TinyTransformer."""
from __future__ import annotations

import copy

import pytest
import torch

from sparsecraft import Sparsifier, read_checkpoint
from sparsecraft.errors import SparsecraftError
from sparsecraft.models.hf import export_pretrained, hf_spec
from sparsecraft.patterns import NM
from sparsecraft.posttrain import find_blocks, prune_model
from sparsecraft.posttrain.hf import encode
from sparsecraft.posttrain.metrics import layer_errors, sentence_embeddings

TEXTS = ["The assert statement checks a condition.", "A for loop iterates over a sequence of items in order.",
         "Classes bundle data and functionality.", "Exceptions propagate until handled by a try statement.",
         "x = 1", "Lambda expressions create small anonymous functions returning one expression value."]


def _batches(tokenizer):
    return encode(tokenizer, TEXTS, seq_len=16, batch_size=3)


def test_block_inputs_match_full_forward_at_zero_sparsity(tiny_bert, minilm_tokenizer) -> None:
    batches = _batches(minilm_tokenizer)
    with torch.no_grad():
        full = [tiny_bert(**b, output_hidden_states=True).hidden_states for b in batches]
    reference = copy.deepcopy(tiny_bert.state_dict())
    seen: dict[int, list[torch.Tensor]] = {}
    _, report = prune_model(tiny_bert, batches, "sparsegpt", 0.0, on_block_inputs=lambda i, h: seen.__setitem__(i, h))
    assert sorted(seen) == [0, 1]
    for i, hidden in seen.items():
        for b, h in enumerate(hidden):
            mask = batches[b]["attention_mask"].bool()
            torch.testing.assert_close(h[mask], full[b][i][mask], rtol=1e-5, atol=1e-5)
    assert all(torch.equal(v, reference[k]) for k, v in tiny_bert.state_dict().items())
    assert report.calib_tokens == sum(int(b["attention_mask"].sum()) for b in batches)
    assert all(r.rel_error == 0.0 for r in report.layers)


def test_later_blocks_see_pruned_inputs(tiny_decoder) -> None:
    ids = torch.randint(0, 256, (8, 16), generator=torch.Generator().manual_seed(0))
    dense = copy.deepcopy(tiny_decoder)
    seen: dict[int, list[torch.Tensor]] = {}
    prune_model(tiny_decoder, [{"x": ids[:4]}, {"x": ids[4:]}], "wanda", 0.8,
                on_block_inputs=lambda i, h: seen.__setitem__(i, h))
    with torch.no_grad():
        h = dense.tokens(ids)
        torch.testing.assert_close(torch.cat(seen[0]), h)
        pruned_block0 = tiny_decoder.blocks[0](h)
        torch.testing.assert_close(torch.cat(seen[1]), pruned_block0)
        assert not torch.allclose(pruned_block0, dense.blocks[0](h))


@pytest.mark.parametrize("method,pattern", [("magnitude", "2:4"), ("wanda", "4:8"), ("sparsegpt", "2:4"),
                                            ("owl-wanda", "unstructured"), ("owl-sparsegpt", "unstructured")])
def test_every_layer_pruned_and_valid(tiny_decoder, method: str, pattern: str) -> None:
    ids = torch.randint(0, 256, (6, 16), generator=torch.Generator().manual_seed(1))
    owl = {"owl_m": 1.5, "owl_lambda": 0.1} if method.startswith("owl") else {}
    sp, report = prune_model(tiny_decoder, [{"x": ids}], method, 0.6, pattern, **owl)
    linears = [m for m in find_blocks(tiny_decoder).modules() if isinstance(m, torch.nn.Linear)]
    assert len(report.layers) == len(linears) == len(sp.masks) == 12
    for lin, layer, (name, mask) in zip(linears, report.layers, sp.masks.items()):
        zeros = float((lin.weight == 0).float().mean())
        assert zeros == pytest.approx(layer.sparsity)
        assert name == f"{layer.name}.weight" and lin.weight_mask is mask
        assert not lin.weight[~mask].any()  # the Sparsifier holds exactly the pruned entries
        if pattern != "unstructured":
            NM(*map(int, pattern.split(":"))).validate(lin.weight != 0)
            assert zeros == pytest.approx(0.5, abs=0.02)
    # per-row (Wanda) and per-block (SparseGPT) rounding of 16- and 64-wide layers
    assert report.overall_sparsity == pytest.approx(0.5 if pattern != "unstructured" else 0.6, abs=0.03)
    if method.startswith("owl"):
        assert sum(report.block_sparsity) / 2 == pytest.approx(0.6)
        assert max(report.block_sparsity) - min(report.block_sparsity) == pytest.approx(0.2)
    assert tiny_decoder.head.weight.ne(0).all()  # only Linears inside the blocks are pruned


def test_bad_requests_fail_before_touching_the_model(tiny_decoder) -> None:
    before = copy.deepcopy(tiny_decoder.state_dict())
    ids = {"x": torch.zeros(2, 8, dtype=torch.long)}
    cases = [("wanda", 0.5, "unstructured", [], "calibration"), ("owl-wanda", 0.5, "2:4", [ids], "OWL"),
             ("sparsegpt", 1.0, "unstructured", [ids], "sparsity"), ("sparsegpt", 0.5, "3:32", [ids], "not divisible"),
             ("nope", 0.5, "unstructured", [ids], "unknown"), ("wanda", 0.5, "block4x4", [ids], "supports pattern")]
    for method, sparsity, pattern, batches, message in cases:
        with pytest.raises(SparsecraftError, match=message):
            prune_model(tiny_decoder, batches, method, sparsity, pattern)
    assert all(torch.equal(v, before[k]) for k, v in tiny_decoder.state_dict().items())
    with pytest.raises(SparsecraftError, match="no list of blocks"):
        prune_model(torch.nn.Sequential(torch.nn.Linear(4, 4)), [], "magnitude", 0.5)
    with pytest.raises(SparsecraftError, match="option 'owl_m' does not apply to method wanda"):
        prune_model(tiny_decoder, [ids], "wanda", 0.5, owl_m=2.0)
    assert all(torch.equal(v, before[k]) for k, v in tiny_decoder.state_dict().items())


def test_layers_and_keep_dense_select_targets_within_the_blocks(tiny_decoder) -> None:
    ids = {"x": torch.randint(0, 256, (4, 16), generator=torch.Generator().manual_seed(2))}
    sp, report = prune_model(tiny_decoder, [ids], "wanda", 0.5, keep_dense=["blocks.1", "*.mlp.*"])
    assert list(sp.masks) == [f"blocks.0.attn.{n}_proj.weight" for n in ("q", "k", "v", "out")]
    assert [r.name for r in report.layers] == [n[: -len(".weight")] for n in sp.masks]
    assert tiny_decoder.blocks[1].attn.q_proj.weight.ne(0).all() and tiny_decoder.blocks[0].mlp.fc1.weight.ne(0).all()
    with pytest.raises(SparsecraftError, match="matches no prunable layer"):
        prune_model(tiny_decoder, [ids], "wanda", 0.5, layers=["head"])  # outside the blocks


def test_pruned_checkpoint_reloads_with_identical_outputs(tiny_bert, minilm_tokenizer, tmp_path) -> None:
    batches = _batches(minilm_tokenizer)
    source = export_pretrained(tiny_bert, minilm_tokenizer, tmp_path / "dense")
    dense = copy.deepcopy(tiny_bert)
    sp, report = prune_model(tiny_bert, batches, "sparsegpt", 0.5, "2:4")
    out = tmp_path / "pruned.safetensors"
    sp.save(str(out), model_spec=hf_spec(str(source), tiny_bert), extra=report.to_metadata())
    ckpt = read_checkpoint(out)
    assert ckpt.extra["method"] == "sparsegpt" and ckpt.extra["pattern"] == "2:4"
    assert ckpt.model_spec["source"] == str(source.resolve())
    assert ckpt.extra["layers"]["encoder.layer.0.attention.self.query"]["sparsity"] == 0.5
    loaded = Sparsifier.load(str(out), ckpt.build_model())
    assert loaded.masks.keys() == sp.masks.keys()
    assert all(torch.equal(loaded.masks[n], m) for n, m in sp.masks.items())
    assert loaded.sparsity() == sp.sparsity() == 0.5
    exported = export_pretrained(tiny_bert, minilm_tokenizer, tmp_path / "export")
    from transformers import AutoModel

    plain = AutoModel.from_pretrained(exported).eval()
    with torch.no_grad():
        for b in batches:
            expected = tiny_bert(**b).last_hidden_state
            assert torch.equal(plain(**b).last_hidden_state, expected)
            assert torch.equal(loaded.model(**b).last_hidden_state, expected)
    errors = layer_errors(dense, loaded.model, batches)
    assert set(errors) == set(ckpt.extra["layers"]) and all(0 < e < 1 for e in errors.values())
    emb = sentence_embeddings(loaded.model, batches)
    assert emb.shape == (len(TEXTS), 16) and torch.allclose(emb.norm(dim=1), torch.ones(len(TEXTS)))
    with pytest.raises(SparsecraftError, match="already exists"):
        sp.save(str(out))
    with pytest.raises(SparsecraftError, match="already exists"):
        export_pretrained(tiny_bert, minilm_tokenizer, exported)
