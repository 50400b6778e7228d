"""Gradual pruning during distillation: nested masks, the cubic schedule, the three criteria, the
oBERT update, and exact resume after an interruption (a real SIGINT included)."""
from __future__ import annotations

import copy
import os
import signal
from types import SimpleNamespace

import pytest
import torch

from sparsecraft.errors import SparsecraftError
from sparsecraft.patterns import get_pattern
from sparsecraft.posttrain.gradual import GradualConfig, GradualDistiller, lr_factor, nested_masks
from sparsecraft.posttrain.longrun import Interrupted, MetricsLog, load_state, read_metrics, run_to_end, save_state
from sparsecraft.posttrain.saliency import SALIENCIES, OBert, Wanda, fisher_block_size, make_saliency
from sparsecraft.target import Target
from sparsecraft.training.schedules import cubic_sparsity


@pytest.fixture
def batches(minilm_tokenizer):
    from sparsecraft.posttrain.hf import calibration_texts, encode

    return encode(minilm_tokenizer, calibration_texts(12), 16, batch_size=4)


def _distiller(tiny_bert, batches, **kw) -> GradualDistiller:
    kw = {"sparsity": 0.75, "steps": 12, "prune_end": 8, "prune_every": 2, "lr": 1e-3, **kw}
    return GradualDistiller(copy.deepcopy(tiny_bert), tiny_bert, batches, GradualConfig(**kw))


@pytest.mark.parametrize("pattern,allocation", [("unstructured", "global"), ("block4x1", "uniform"),
                                                ("2:4", "global"), ("2:4", "uniform")])
def test_nested_masks_keep_pruned_weights_pruned(pattern: str, allocation: str) -> None:
    g = torch.Generator().manual_seed(0)
    scores = {"a": torch.randn(8, 16, generator=g), "b": torch.randn(16, 8, generator=g) * 5}
    masks = {n: torch.ones_like(s, dtype=torch.bool) for n, s in scores.items()}
    pat = get_pattern(pattern)
    final = 0.5 if pattern == "2:4" else 0.75
    for s in (0.2, 0.4, final):
        new = nested_masks({n: torch.randn(v.shape, generator=g) for n, v in scores.items()}, masks, s, pat,
                           allocation)
        assert all(not (new[n] & ~masks[n]).any() for n in new)  # nothing grows back
        kept = sum(int(m.sum()) for m in new.values())
        assert kept == pytest.approx((1 - s) * 256, abs=4 if pattern != "2:4" else 1)
        masks = new
    for m in masks.values():
        pat.validate(m)


def test_linear_lr_warms_up_then_decays_to_zero() -> None:
    config = GradualConfig(steps=12, warmup=4, lr_schedule="linear").resolved()
    assert [lr_factor(s, config) for s in (0, 3, 4, 8, 12)] == [0.25, 1.0, 1.0, 0.5, 0.0]


def test_cyclic_lr_rewinds_at_every_pruning_event() -> None:
    config = GradualConfig(steps=20, prune_start=2, prune_end=10, prune_every=4, lr_schedule="cyclic",
                           cycle_floor=0.2).resolved()
    assert config.warmup == 0
    factors = [lr_factor(s, config) for s in range(21)]
    events = [s for s in range(21) if GradualDistiller.is_prune_step(SimpleNamespace(config=config), s)]
    assert events == [2, 6, 10]
    assert all(factors[s] == 1.0 for s in events)
    assert factors[:2] == [1.0, 1.0]  # before the window
    assert factors[2:6] == pytest.approx([1.0, 0.8, 0.6, 0.4])  # 1 -> floor over each cycle
    assert factors[10:] == pytest.approx([1.0 - i / 10 for i in range(11)])  # recovery: 1 -> 0
    warm = GradualConfig(steps=20, prune_start=2, prune_end=10, prune_every=4, lr_schedule="cyclic",
                         warmup=4).resolved()
    assert lr_factor(1, warm) == 0.5 and lr_factor(3, warm) == pytest.approx(0.1 + 0.9 * 0.75)


def test_bad_schedule_settings_are_one_line_errors() -> None:
    with pytest.raises(SparsecraftError, match="lr_schedule must be one of linear, cyclic"):
        GradualConfig(lr_schedule="cosine").resolved()
    with pytest.raises(SparsecraftError, match="cycle_floor must be in"):
        GradualConfig(cycle_floor=0.0).resolved()


@pytest.mark.parametrize("criterion", ["magnitude", "movement", "wanda", "obert"])
@pytest.mark.parametrize("pattern", ["unstructured", "2:4", "block4x1"])
def test_schedule_pattern_and_fixed_masks(tiny_bert, batches, criterion: str, pattern: str) -> None:
    options = {"fisher_grads": 2, "fisher_block": 8} if criterion == "obert" else {}
    d = _distiller(tiny_bert, batches, pattern=pattern, criterion=criterion, criterion_options=options)
    embeddings = d.student.embeddings.word_embeddings.weight.detach().clone()
    final = 0.5 if pattern == "2:4" else 0.75
    assert set(d.sparsifier.masks) == {f"{n}.weight" for n, m in d.student.encoder.named_modules(prefix="encoder")
                                       if isinstance(m, torch.nn.Linear)}  # blocks only: no pooler, no embeddings
    frozen = None
    for _ in range(12):
        info = d.train_step()
        step = info["step"]
        last_event = min(8, (step - 1) // 2 * 2)
        assert info["sparsity"] == pytest.approx(cubic_sparsity(last_event, final, 0.0, 0, 8), abs=0.02)
        for name, mask in d.sparsifier.masks.items():
            assert not d.student.get_parameter(name)[~mask].any()
        if step > 8:
            frozen = frozen or {n: m.clone() for n, m in d.sparsifier.masks.items()}
            assert all(torch.equal(frozen[n], m) for n, m in d.sparsifier.masks.items())
    for name, mask in d.sparsifier.masks.items():
        assert str(d.sparsifier.patterns[name]) == pattern
        get_pattern(pattern).validate(mask)
    assert d.sparsity() == pytest.approx(final, abs=0.01)
    assert not torch.equal(embeddings, d.student.embeddings.word_embeddings.weight)  # trained, not pruned
    assert torch.equal(d.student.embeddings.word_embeddings.weight == 0, embeddings == 0)  # the padding row only


def test_distillation_recovers_after_pruning(tiny_bert, batches) -> None:
    d = _distiller(tiny_bert, batches, steps=40, prune_end=10, lr=3e-3)
    losses = [d.train_step()["loss"] for _ in range(40)]
    assert abs(losses[0]) < 1e-6  # no dropout: before the first pruning the student is the teacher
    assert d.sparsity() == pytest.approx(0.75, abs=0.01)
    assert sum(losses[-5:]) < 0.5 * sum(losses[10:15])


def test_obert_scores_and_update_follow_obs() -> None:
    layer = torch.nn.Linear(8, 2, bias=False)
    t = Target("", layer)
    grads = [{"weight": torch.randn(2, 8, generator=torch.Generator().manual_seed(i))} for i in range(4)]
    crit = OBert(fisher_grads=4, fisher_block=4, fisher_damp=0.1)
    scores = crit.scores([t], lambda m: grads[:m])
    inv = crit._inverse_fisher(t)
    assert inv.shape == (4, 4, 4)
    w = layer.weight.detach().clone()
    torch.testing.assert_close(scores["weight"], w.square() / (2 * inv.diagonal(dim1=1, dim2=2).reshape(2, 8)))
    drop = torch.zeros(2, 8, dtype=torch.bool)
    drop[0, 1] = drop[1, 6] = True  # one weight per Fisher block: the OBS update zeroes it exactly
    crit.update([t], {"weight": drop})
    assert layer.weight[drop].abs().max() < 1e-5
    assert not torch.equal(layer.weight[~drop], w[~drop])
    assert fisher_block_size(384, 32) == 32 and fisher_block_size(12, 32) == 12 and fisher_block_size(20, 8) == 5


def test_wanda_scores_weight_times_input_norm_of_real_tokens() -> None:
    layer = torch.nn.Linear(6, 3)
    t = Target("", layer)
    x = torch.randn(2, 5, 6, generator=torch.Generator().manual_seed(0))
    real = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])

    def gradients(count, recorder=None):
        assert count == 2
        recorder.token_mask = real
        layer(x)
        return []

    scores = Wanda(wanda_batches=2).scores([t], gradients)["weight"]
    norms = x[real.bool()].norm(dim=0)  # padding positions do not count
    torch.testing.assert_close(scores, layer.weight.detach().abs() * norms)
    with pytest.raises(SparsecraftError, match="wanda-batches must be an integer >= 1"):
        make_saliency("wanda", wanda_batches=0)


def test_config_and_criterion_errors(tiny_bert, batches) -> None:
    assert SALIENCIES.names() == ["magnitude", "movement", "obert", "wanda"]
    cases = [({"sparsity": 1.0}, "sparsity must be a fraction"), ({"steps": 0}, "steps must be an integer"),
             ({"prune_end": 20}, "prune_start < prune_end <= steps"), ({"allocation": "erk"}, "allocation"),
             ({"criterion": "snip"}, "unknown gradual pruning criterion"), ({"loss": "kl"}, "loss must be"),
             ({"initial_sparsity": 0.9}, "above the final"), ({"pattern": "block3x1"}, "does not split into 3x1"),
             ({"criterion_options": {"fisher_grads": 2}}, "does not apply to criterion wanda")]
    for kw, message in cases:
        with pytest.raises(SparsecraftError, match=message):
            _distiller(tiny_bert, batches, **kw)
    with pytest.raises(SparsecraftError, match="fisher_damp"):
        make_saliency("obert", fisher_damp=0.0)


def _final(d: GradualDistiller) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in d.student.state_dict().items()}


@pytest.mark.parametrize("criterion", ["movement", "obert"])
def test_interrupt_and_resume_gives_identical_weights(tiny_bert, batches, tmp_path, criterion: str) -> None:
    kw = {"criterion": criterion, "pattern": "2:4" if criterion == "obert" else "unstructured", "dropout": True,
          "criterion_options": {"fisher_grads": 2} if criterion == "obert" else {}}
    full = _distiller(tiny_bert, batches, **kw)
    rows = run_to_end(full, evaluate=lambda m: {"cosine": 1.0}, eval_every=3)
    assert [r["step"] for r in rows] == [3, 6, 9, 12]
    expected = _final(full)

    state, log = tmp_path / "run.state", MetricsLog(tmp_path / "m.jsonl")
    first = _distiller(tiny_bert, batches, **kw)
    with pytest.raises(Interrupted, match="interrupted at step 5"):
        run_to_end(first, state_path=state, save_every=4, evaluate=lambda m: {"cosine": 1.0}, eval_every=1,
                   log=log, stop_after=5)
    assert [r["step"] for r in read_metrics(log.path)] == [1, 2, 3, 4, 5]
    first.train_step()  # work after the saved state is lost on resume, as after a kill
    log.write({"step": 6, "cosine": 0.0})
    resumed = _distiller(tiny_bert, batches, **kw)
    resumed.load_state_dict(load_state(state))
    assert resumed.step == 5
    log = MetricsLog(log.path, resume_step=resumed.step)
    run_to_end(resumed, state_path=state, evaluate=lambda m: {"cosine": 1.0}, eval_every=1, log=log)
    assert [r["step"] for r in read_metrics(log.path)] == list(range(1, 13))
    got = _final(resumed)
    assert all(torch.equal(got[k], expected[k]) for k in expected)


def test_a_real_sigint_saves_the_state_and_resumes(tiny_bert, batches, tmp_path) -> None:
    full = _distiller(tiny_bert, batches)
    run_to_end(full)

    def send_sigint(model: torch.nn.Module) -> dict[str, float]:
        os.kill(os.getpid(), signal.SIGINT)
        return {}

    state = tmp_path / "run.state"
    first = _distiller(tiny_bert, batches)
    with pytest.raises(Interrupted) as stop:
        run_to_end(first, state_path=state, evaluate=send_sigint, eval_every=7)
    assert stop.value.step == 7 and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    resumed = _distiller(tiny_bert, batches)
    resumed.load_state_dict(load_state(state))
    run_to_end(resumed)
    assert all(torch.equal(v, full.student.state_dict()[k]) for k, v in resumed.student.state_dict().items())


def test_resume_refuses_corrupt_or_other_states(tiny_bert, batches, tmp_path) -> None:
    bad = tmp_path / "bad.state"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(SparsecraftError, match="not a readable distillation state"):
        load_state(bad)
    with pytest.raises(SparsecraftError, match="no saved run"):
        load_state(tmp_path / "none.state")
    d = _distiller(tiny_bert, batches)
    d.train_step()
    save_state(d, tmp_path / "ok.state")
    other = _distiller(tiny_bert, batches, sparsity=0.5)
    with pytest.raises(SparsecraftError, match="other settings .*sparsity"):
        other.load_state_dict(load_state(tmp_path / "ok.state"))
    truncated = tmp_path / "cut.state"
    truncated.write_bytes((tmp_path / "ok.state").read_bytes()[:-100])
    with pytest.raises(SparsecraftError, match="corrupt or truncated"):
        load_state(truncated)
