import pytest
import torch

from sparsecraft.data import load_dataset
from sparsecraft.errors import SparsecraftError
from sparsecraft.models import build_model, evaluate, evaluate_loss, model_for_data, train_classifier


def _fresh_cnn(data, seed=0):
    torch.manual_seed(seed)
    return model_for_data("cnn", data)


def test_cnn_learns_digits(digits):
    model = _fresh_cnn(digits)
    history = train_classifier(model, digits, epochs=3, seed=0, progress=False, num_threads=1)
    assert len(history.epoch_loss) == 3 and history.steps == 3 * 23  # ceil(1437 / 64) = 23
    assert history.epoch_loss[-1] < history.epoch_loss[0] / 3
    assert evaluate(model, digits.test_x, digits.test_y) > 0.9


def test_num_threads_is_restored(digits):
    torch.set_num_threads(2)
    before = torch.get_num_threads()
    model = _fresh_cnn(digits)
    train_classifier(model, (digits.train_x[:8], digits.train_y[:8]), epochs=1, progress=False, num_threads=1)
    assert torch.get_num_threads() == before
    with pytest.raises(SparsecraftError, match="num_threads"):
        train_classifier(model, digits, progress=False, num_threads=0)
    assert torch.get_num_threads() == before


torch.manual_seed(0)
_reference_init = build_model("transformer", num_classes=10, in_channels=1, patch_size=8, d_model=16,
                              num_heads=2, num_layers=1, dropout=0.1)


def test_training_is_deterministic_and_leaves_global_rng(digits):
    subset = (digits.train_x[:300], digits.train_y[:300])
    weights = []
    for _ in range(2):
        model = build_model("transformer", num_classes=10, in_channels=1, patch_size=8, d_model=16,
                            num_heads=2, num_layers=1, dropout=0.1)  # dropout draws from the RNG
        model.load_state_dict(_reference_init.state_dict())
        state = torch.get_rng_state()
        train_classifier(model, subset, epochs=1, seed=7, progress=False, num_threads=1)
        assert torch.equal(torch.get_rng_state(), state)
        weights.append([p.detach().clone() for p in model.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*weights))
    other = build_model("transformer", num_classes=10, in_channels=1, patch_size=8, d_model=16,
                        num_heads=2, num_layers=1, dropout=0.1)
    other.load_state_dict(_reference_init.state_dict())
    train_classifier(other, subset, epochs=1, seed=8, progress=False, num_threads=1)
    assert not all(torch.equal(a, b) for a, b in zip(weights[0], other.parameters()))


def test_custom_optimizer_and_on_step_hook(digits):
    model = _fresh_cnn(digits)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    calls = []
    head = model.head.weight

    def on_step(step, m, o):
        assert m is model and o is opt
        with torch.no_grad():
            head[:, 0] = 0  # e.g. a mask re-applied after each update
        calls.append(step)

    train_classifier(model, (digits.train_x[:100], digits.train_y[:100]), epochs=2, batch_size=30,
                     optimizer=opt, on_step=on_step, progress=False, num_threads=1)
    assert calls == list(range(1, 9))  # 4 batches x 2 epochs
    assert torch.all(head[:, 0] == 0)
    assert opt.state[head]["momentum_buffer"].abs().sum() > 0  # the given optimizer did the work


def test_evaluate_matches_manual_and_restores_mode(digits):
    model = _fresh_cnn(digits)
    model.train()
    acc = evaluate(model, digits.test_x, digits.test_y, batch_size=100)
    assert model.training
    model.eval()
    with torch.no_grad():
        pred = model(digits.test_x).argmax(1)
    assert acc == pytest.approx(float((pred == digits.test_y).float().mean()))
    loss = evaluate_loss(model, digits.test_x, digits.test_y, batch_size=70)
    with torch.no_grad():
        expected = torch.nn.functional.cross_entropy(model(digits.test_x), digits.test_y)
    assert loss == pytest.approx(float(expected), rel=1e-5)


def test_lm_training_lowers_token_loss():
    data = load_dataset("text", seq_len=32)
    torch.manual_seed(0)
    model = model_for_data("transformer", data, d_model=32, num_heads=2, num_layers=1)
    x, y = data.train_x[:256], data.train_y[:256]
    test_x, test_y = data.test_x[:128], data.test_y[:128]
    before = evaluate_loss(model, test_x, test_y)
    assert before == pytest.approx(torch.log(torch.tensor(256.0)).item(), rel=0.1)
    train_classifier(model, (x, y), epochs=2, lr=1e-2, batch_size=32, progress=False, num_threads=1)
    assert evaluate_loss(model, test_x, test_y) < before - 1.0
    assert 0.0 <= evaluate(model, test_x, test_y) <= 1.0


def test_bad_arguments(digits):
    model = _fresh_cnn(digits)
    with pytest.raises(SparsecraftError, match="as many targets"):
        train_classifier(model, (digits.train_x[:5], digits.train_y[:4]), progress=False, num_threads=1)
    with pytest.raises(SparsecraftError, match="DataSplits"):
        train_classifier(model, digits.train_x, progress=False, num_threads=1)
    with pytest.raises(SparsecraftError, match="batch_size"):
        train_classifier(model, digits, batch_size=0, progress=False, num_threads=1)
    with pytest.raises(SparsecraftError, match="lr"):
        train_classifier(model, digits, lr=0, progress=False, num_threads=1)
    with pytest.raises(SparsecraftError, match="empty"):
        evaluate(model, digits.test_x[:0], digits.test_y[:0])


def test_train_classifier_is_fit_at_a_constant_rate(digits):
    from sparsecraft.training import fit

    subset = (digits.train_x[:200], digits.train_y[:200])
    a = build_model("transformer", num_classes=10, in_channels=1, patch_size=8, d_model=16, num_heads=2,
                    num_layers=1, dropout=0.1)
    a.load_state_dict(_reference_init.state_dict())
    b = build_model("transformer", num_classes=10, in_channels=1, patch_size=8, d_model=16, num_heads=2,
                    num_layers=1, dropout=0.1)
    b.load_state_dict(_reference_init.state_dict())
    ha = train_classifier(a, subset, epochs=2, batch_size=32, seed=5, progress=False, num_threads=1)
    state = torch.get_rng_state()
    hb = fit(b, subset, epochs=2, batch_size=32, lr=3e-3, scheduler=None, seed=5, progress=False, num_threads=1)
    assert torch.equal(torch.get_rng_state(), state)   # fit forks the RNG too
    assert ha.epoch_loss == hb.epoch_loss and ha.steps == hb.steps == 14
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    model = _fresh_cnn(digits)
    assert train_classifier(model, digits, epochs=0, progress=False).steps == 0
