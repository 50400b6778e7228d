"""Physical channel removal: turn channel masks into a smaller dense model.

A *chain* is a producer layer (Conv/Linear) whose output channels flow, through an optional
BatchNorm and element-wise layers (activations, dropout), into exactly one consumer layer
(Conv/Linear with ``groups == 1``) and nowhere else. Removing channel ``c`` then deletes row ``c``
of the producer (and its bias), entry ``c`` of the BatchNorm, and input column ``c`` of the
consumer: the result is an ordinary, smaller dense model. Chains are found by ``torch.fx`` tracing;
outputs feeding a residual addition or a reshape are not chains and are never pruned.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.nn.modules.conv import _ConvNd

from ..errors import SparsecraftError

_LAYER = (nn.Linear, _ConvNd)
_ELEMENTWISE_MODULES = (nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.LeakyReLU, nn.ELU,
                        nn.Dropout, nn.Identity, nn.Hardswish)
_ELEMENTWISE_FUNCS = {F.relu, torch.relu, F.gelu, F.silu, torch.tanh, torch.sigmoid, F.dropout}


@dataclass(frozen=True)
class Chain:
    """``producer`` -> optional ``norm`` (BatchNorm) -> element-wise ops -> ``consumer``.

    Attributes
    ----------
    producer, consumer : str
        Module names of the two Conv/Linear layers.
    norm : str or None
        Module name of the BatchNorm between them, if any.
    """

    producer: str
    norm: str | None
    consumer: str


def _out_channels(m: nn.Module) -> int:
    return m.out_features if isinstance(m, nn.Linear) else m.out_channels


def find_chains(model: nn.Module) -> list[Chain]:
    """All prunable chains of ``model``.

    Parameters
    ----------
    model : nn.Module
        Must be traceable by ``torch.fx``.

    Returns
    -------
    list of Chain
        In the order the graph runs them.
    """
    try:
        graph = fx.symbolic_trace(model).graph
    except Exception as err:  # fx raises many types for untraceable code
        raise SparsecraftError(f"cannot trace the model to find prunable channels ({type(err).__name__}); "
                               "channel removal needs an fx-traceable model") from None
    mods = dict(model.named_modules())
    chains = []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(mods[node.target], _LAYER):
            continue
        producer = mods[node.target]
        if isinstance(producer, _ConvNd) and producer.groups != 1:
            continue
        cur, norm = node, None
        while len(cur.users) == 1:
            nxt = next(iter(cur.users))
            if nxt.args[:1] != (cur,):
                break
            if nxt.op == "call_module":
                m = mods[nxt.target]
                if (isinstance(m, nn.modules.batchnorm._BatchNorm) and norm is None
                        and m.num_features == _out_channels(producer)):
                    norm = nxt.target
                elif isinstance(m, _ELEMENTWISE_MODULES):
                    pass
                elif isinstance(m, _LAYER) and (not isinstance(m, _ConvNd) or m.groups == 1):
                    in_ch = m.in_features if isinstance(m, nn.Linear) else m.in_channels
                    if in_ch == _out_channels(producer) and type(m) is type(producer):
                        chains.append(Chain(node.target, norm, nxt.target))
                    break
                else:
                    break
            elif nxt.op == "call_function" and nxt.target in _ELEMENTWISE_FUNCS:
                pass
            else:
                break
            cur = nxt
    return chains


def _set(model: nn.Module, name: str, module: nn.Module) -> None:
    model.set_submodule(name, module)


@torch.no_grad()
def _shrink_out(m: nn.Module, keep: torch.Tensor) -> nn.Module:
    idx = keep.nonzero().flatten()
    if isinstance(m, nn.Linear):
        new = nn.Linear(m.in_features, len(idx), bias=m.bias is not None)
    else:
        new = type(m)(m.in_channels, len(idx), m.kernel_size, m.stride, m.padding, m.dilation, 1,
                      m.bias is not None, m.padding_mode)
    new.weight.copy_(m.weight[idx])
    if m.bias is not None:
        new.bias.copy_(m.bias[idx])
    return new.to(m.weight.dtype).train(m.training)


@torch.no_grad()
def _shrink_in(m: nn.Module, keep: torch.Tensor) -> nn.Module:
    idx = keep.nonzero().flatten()
    if isinstance(m, nn.Linear):
        new = nn.Linear(len(idx), m.out_features, bias=m.bias is not None)
    else:
        new = type(m)(len(idx), m.out_channels, m.kernel_size, m.stride, m.padding, m.dilation, 1,
                      m.bias is not None, m.padding_mode)
    new.weight.copy_(m.weight[:, idx])
    if m.bias is not None:
        new.bias.copy_(m.bias)
    return new.to(m.weight.dtype).train(m.training)


@torch.no_grad()
def _shrink_norm(bn: nn.modules.batchnorm._BatchNorm, keep: torch.Tensor) -> nn.Module:
    idx = keep.nonzero().flatten()
    new = type(bn)(len(idx), bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
    if bn.affine:
        new.weight.copy_(bn.weight[idx])
        new.bias.copy_(bn.bias[idx])
    if bn.track_running_stats:
        new.running_mean.copy_(bn.running_mean[idx])
        new.running_var.copy_(bn.running_var[idx])
        new.num_batches_tracked.copy_(bn.num_batches_tracked)
    return new.train(bn.training)


def remove_channels(model: nn.Module, keep: dict[Chain, torch.Tensor]) -> nn.Module:
    """Physically remove the channels where ``keep[chain]`` is False.

    Parameters
    ----------
    model : nn.Module
        Modified in place: its modules are replaced by smaller ones.
    keep : dict
        ``{chain: bool tensor of shape (out_channels of chain.producer,)}``; at least one True each.

    Returns
    -------
    nn.Module
        ``model``.
    """
    for chain, k in keep.items():
        k = k.to(torch.bool).flatten()
        prod = model.get_submodule(chain.producer)
        if k.numel() != _out_channels(prod):
            raise SparsecraftError(f"keep mask for {chain.producer} has {k.numel()} entries, "
                                   f"layer has {_out_channels(prod)}")
        if not bool(k.any()):
            raise SparsecraftError(f"cannot remove every channel of {chain.producer}; keep at least one")
        _set(model, chain.producer, _shrink_out(prod, k))
        if chain.norm is not None:
            _set(model, chain.norm, _shrink_norm(model.get_submodule(chain.norm), k))
        _set(model, chain.consumer, _shrink_in(model.get_submodule(chain.consumer), k))
    return model


__all__ = ["Chain", "find_chains", "remove_channels"]
