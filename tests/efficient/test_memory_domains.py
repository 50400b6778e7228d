import pytest
import torch
from torch import nn

from sparsecraft.efficient import source_lm, training_memory
from sparsecraft.errors import SparsecraftError


def test_training_memory_counts_saved_inputs_grads_and_adam_state():
    lin = nn.Linear(8, 4)
    x = torch.randn(5, 8)
    mem = training_memory(lin, lambda: lin(x).pow(2).sum(), torch.optim.Adam(lin.parameters()))
    # saved: the input (5x8) for the weight grad and the output (5x4) for pow's backward
    assert mem.activations == 4 * (40 + 20)
    assert mem.gradients == 4 * 36 and mem.optimizer == 2 * 4 * 36 and mem.parameters == 4 * 36
    assert mem.total == mem.training_state + mem.parameters


def test_training_memory_of_a_frozen_bias_and_sgd():
    lin = nn.Linear(8, 4)
    lin.bias.requires_grad_(False)
    mem = training_memory(lin, lambda: lin(torch.randn(5, 8)).sum(), torch.optim.SGD([lin.weight], lr=0.1))
    assert (mem.activations, mem.gradients, mem.optimizer) == (160, 128, 0)


def test_source_lm_windows_and_errors():
    train_x, train_y, test_x, test_y = source_lm(seq_len=32, train_modules=("textwrap",), test_modules=("bisect",))
    assert train_x.shape[1] == 32 and test_x.shape[1] == 32 and len(train_x) > len(test_x) > 0
    assert torch.equal(train_x[0, 1:], train_y[0, :-1])
    with pytest.raises(SparsecraftError, match="overlap"):
        source_lm(train_modules=("bisect",), test_modules=("bisect",))
    with pytest.raises(SparsecraftError, match="'sys' is not a pure-Python module"):
        source_lm(train_modules=("sys",))
