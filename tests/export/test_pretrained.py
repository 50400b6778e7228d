"""Hugging Face round trips: sparse directories straight into the fast runtime, AutoModel loads, model cards."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from transformers import AutoModel, BertConfig, BertModel

import sparsecraft
from sparsecraft.export import save_compressed
from sparsecraft.export.card import model_card
from sparsecraft.inference import FusedBert, SparseLinear, convert, from_pretrained, load_converted, save_converted

from .conftest import encoder_linears, pruned_bert, same_state


def _feed(batch: int = 3, seq: int = 10) -> dict[str, torch.Tensor]:
    mask = torch.ones(batch, seq, dtype=torch.long)
    mask[0, 6:] = 0
    return {"input_ids": torch.randint(0, 1000, (batch, seq), generator=torch.Generator().manual_seed(1)),
            "attention_mask": mask}


@pytest.mark.parametrize("fmt", ["dense", "sparse-bitmask", "sparse-24-bitmask"])
def test_from_pretrained_equals_convert_of_the_loaded_model(tmp_path, fmt):
    model = pruned_bert("2:4" if fmt == "sparse-24-bitmask" else "unstructured", 0.8 if fmt != "dense" else 0.5)
    out = save_compressed(model, tmp_path / "m", format=fmt)
    if fmt == "dense":  # a plain transformers directory: AutoModel loads it as usual
        assert same_state(AutoModel.from_pretrained(out).state_dict(), model.state_dict())
    ref, ref_report = convert(model, min_sparsity=0.3, mode="dense")
    fast, report = from_pretrained(out, mode="dense")
    assert isinstance(fast, FusedBert) and [r.as_dict() for r in report] == [r.as_dict() for r in ref_report]
    assert sum(isinstance(m, SparseLinear) for m in fast.modules()) == 8  # 2 layers x (qkv, attn_out, ffn_in, ffn_out)
    got, want = fast(**_feed()), ref(**_feed())
    torch.testing.assert_close(got.last_hidden_state, want.last_hidden_state, rtol=0, atol=0)
    torch.testing.assert_close(got.pooler_output, want.pooler_output, rtol=0, atol=0)
    again = load_converted(save_converted(fast, tmp_path / "fast.safetensors"))
    torch.testing.assert_close(again(**_feed()).last_hidden_state, want.last_hidden_state, rtol=0, atol=0)


def test_from_pretrained_reads_models_saved_with_a_head(tmp_path):
    from transformers import BertForSequenceClassification

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=1000, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=64)
    clf = BertForSequenceClassification(cfg).eval()
    layers = [f"bert.{n}" for n in encoder_linears(clf.bert)]
    sparsecraft.prune(clf, 0.7, layers=layers, allocation="uniform").finalize()
    out = save_compressed(clf, tmp_path / "clf")
    fast, _ = from_pretrained(out, mode="dense")
    ref, _ = convert(clf.bert, mode="dense")
    torch.testing.assert_close(fast(**_feed()).last_hidden_state, ref(**_feed()).last_hidden_state, rtol=0, atol=0)


def test_from_pretrained_user_errors(tmp_path):
    with pytest.raises(sparsecraft.SparsecraftError, match="has no config.json"):
        from_pretrained(tmp_path)
    relu = BertModel(BertConfig(vocab_size=100, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                intermediate_size=32, hidden_act="relu")).eval()
    out = save_compressed(relu, tmp_path / "relu", format="dense")
    with pytest.raises(sparsecraft.SparsecraftError, match="cannot take the fused path.*hidden_act"):
        from_pretrained(out)
    with pytest.raises(sparsecraft.SparsecraftError, match="unknown format 'zip'"):
        from_pretrained(out, format="zip")
    model = pruned_bert()
    out = save_compressed(model, tmp_path / "m", format="dense")
    (out / "sparsecraft-manifest.json").unlink()
    cfg = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**cfg, "num_hidden_layers": 3}))
    with pytest.raises(sparsecraft.SparsecraftError, match="no tensors for encoder.layer.2"):
        from_pretrained(out)


def test_model_card_lists_every_linear(tmp_path):
    model = pruned_bert("unstructured", 0.6)
    card = model_card(model, method={"method": "magnitude", "pattern": "unstructured", "layers": [1]},
                      metrics={"cosine to dense": 0.97},
                      layer_metrics={"encoder.layer.0.attention.self.query": {"rel_error": 0.125}})
    assert card.startswith("## Sparsity (sparsecraft)") and "- method: magnitude" in card and "- layers:" not in card
    assert "| cosine to dense | 0.97 |" in card
    rows = [line for line in card.splitlines() if line.startswith("| encoder.") or line.startswith("| pooler.")]
    assert len(rows) == len(encoder_linears(model)) + 1
    query = next(r for r in rows if r.startswith("| encoder.layer.0.attention.self.query.weight "))
    w = model.encoder.layer[0].attention.self.query.weight
    assert f"| {float((w == 0).float().mean()):.4g} | 0.125 |" in query
    out = save_compressed(model, tmp_path / "m", card=card)
    assert (out / "README.md").read_text() == card


def test_cli_export_hf_with_card_loads_in_automodel(tmp_path, capsys):
    from sparsecraft.cli import main
    from sparsecraft.models.hf import export_pretrained, load_tokenizer

    model = pruned_bert()
    src = export_pretrained(model, load_tokenizer("minilm"), tmp_path / "src")
    code = main(["export", "--format", "hf", "--hf", str(src), "--out", str(tmp_path / "hf"),
                 "--metric", "STS-B spearman=0.81", "--json"])
    assert code == 0, capsys.readouterr().err
    assert same_state(AutoModel.from_pretrained(tmp_path / "hf").state_dict(), model.state_dict())
    assert "| STS-B spearman | 0.81 |" in (tmp_path / "hf" / "README.md").read_text()
    code = main(["export", "--format", "hf", "--hf", str(src), "--out", str(tmp_path / "x"), "--metric", "spearman"])
    assert code == 2 and "is not NAME=NUMBER" in capsys.readouterr().err


# Peak resident memory of the load alone: the kernel's high-water mark (VmHWM) is reset to the current RSS
# just before it (/proc/self/clear_refs, Linux). The load runs twice and the second is measured, so the
# first-call costs (lazy imports, the native kernels' library) are not counted; a fixed malloc mmap threshold
# hands freed blocks back to the OS, so the first load's freed memory does not hide the second one's.
PEAK = textwrap.dedent("""
    import json, re, sys
    import torch
    import sparsecraft.inference
    from sparsecraft.models.hf import load_pretrained
    torch.set_num_threads(1)
    def status(key):
        return int(re.search(key + r":\\s+(\\d+)", open("/proc/self/status").read()).group(1))
    def load():
        if sys.argv[2] == "sparse":
            return sparsecraft.inference.from_pretrained(sys.argv[1], mode="dense")[0]
        return sparsecraft.inference.convert(load_pretrained(sys.argv[1])[0], mode="dense")[0]
    model = load()
    del model
    base = status("VmRSS")
    open("/proc/self/clear_refs", "w").write("5")
    model = load()
    print(json.dumps({"peak": (status("VmHWM") - base) * 1024, "held": (status("VmRSS") - base) * 1024}))
""")


def peak_bytes(path, how: str) -> dict[str, int]:
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", PEAK, str(path), how], capture_output=True, text=True, timeout=300,
                          env=env)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_sparse_load_never_holds_the_dense_model(tmp_path):
    """8 layers (hidden 256, FFN 1024) at 90%: the dense Linears are 25 MB, one layer 3.1 MB, packed ~5 MB."""
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=1000, hidden_size=256, num_hidden_layers=8, num_attention_heads=4,
                     intermediate_size=1024, max_position_embeddings=64)
    model = BertModel(cfg).eval()
    sparsecraft.prune(model, 0.9, layers=encoder_linears(model), allocation="uniform").finalize()
    out = save_compressed(model, tmp_path / "m", format="dense")
    linears = sum(model.get_submodule(n).weight.numel() * 4 for n in encoder_linears(model))
    dense, sparse = peak_bytes(out, "dense"), peak_bytes(out, "sparse")
    assert sparse["peak"] < dense["peak"] - 0.25 * linears, (dense, sparse, linears)
    assert sparse["held"] < 0.25 * linears < dense["held"], (dense, sparse, linears)
