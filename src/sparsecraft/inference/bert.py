"""A fused execution path for BERT-family encoders (BERT, RoBERTa, MiniLM: transformers' BertLayer layout).

:func:`fuse_bert` rebuilds such a model as a :class:`FusedBert`: per layer one Q/K/V Linear (the
three weights stacked, so one sparse matmul), attention through
:func:`torch.nn.functional.scaled_dot_product_attention`, and the epilogues fused into the
Linear calls (bias + residual before each LayerNorm, bias + GELU after the first FFN Linear).
Padded tokens are skipped: the Linears, LayerNorms and GELU run on the real tokens only (unpadded
by the attention mask), attention on the columns that hold a real token in some sequence. Every
Linear is a plain ``nn.Linear`` until :func:`sparsecraft.inference.convert` packs it.
"""
from __future__ import annotations

import copy
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .linear import SparseLinear

FUSED_KIND = "bert"
# the transformers Linear names of encoder layer i, by the fused Linear (under layers.i) they go to
PARTS = {"qkv": ("attention.self.query", "attention.self.key", "attention.self.value"),
         "attn_out": ("attention.output.dense",), "ffn_in": ("intermediate.dense",), "ffn_out": ("output.dense",)}


def _linear(module: nn.Module, x: torch.Tensor, residual: Optional[torch.Tensor] = None,
            gelu: bool = False) -> torch.Tensor:
    if isinstance(module, SparseLinear):
        return module(x, residual=residual, gelu=gelu)
    y = F.linear(x, module.weight, module.bias)
    y = y if residual is None else y + residual
    return F.gelu(y) if gelu else y


def _stacked(parts: list[nn.Linear]) -> nn.Linear:
    """One nn.Linear computing the parts' outputs side by side (their masks applied)."""
    from .convert import masked_weight

    weight = torch.cat([masked_weight(p) for p in parts])
    has_bias = [p.bias is not None for p in parts]
    out = nn.Linear(weight.shape[1], weight.shape[0], bias=any(has_bias))
    with torch.no_grad():
        out.weight.copy_(weight)
        if out.bias is not None:
            out.bias.copy_(torch.cat([p.bias.detach() if p.bias is not None else torch.zeros(p.out_features)
                                      for p in parts]))
    return out


class FusedBertLayer(nn.Module):
    """One encoder layer on unpadded tokens: Q/K/V, SDPA attention, output, LayerNorm, FFN, LayerNorm."""

    def __init__(self, layer: nn.Module, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = _stacked([layer.get_submodule(n) for n in PARTS["qkv"]])
        self.attn_out = _stacked([layer.get_submodule(PARTS["attn_out"][0])])
        self.ln_attn = layer.attention.output.LayerNorm
        self.ffn_in = _stacked([layer.get_submodule(PARTS["ffn_in"][0])])
        self.ffn_out = _stacked([layer.get_submodule(PARTS["ffn_out"][0])])
        self.ln_ffn = layer.output.LayerNorm

    def forward(self, h: torch.Tensor, index: Optional[torch.Tensor], shape: tuple[int, int],
                key_mask: Optional[torch.Tensor]) -> torch.Tensor:
        """h (tokens, hidden): the real tokens of a (batch, seq) grid, at ``index`` in it (None: all)."""
        batch, seq = shape
        hidden = h.shape[1]
        qkv = _linear(self.qkv, h)
        if index is not None:
            qkv = qkv.new_zeros(batch * seq, 3 * hidden).index_copy_(0, index, qkv)
        q, k, v = qkv.view(batch, seq, 3, self.heads, hidden // self.heads).permute(2, 0, 3, 1, 4)
        ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask)
        ctx = ctx.transpose(1, 2).reshape(batch * seq, hidden)
        if index is not None:
            ctx = ctx.index_select(0, index)
        h = self.ln_attn(_linear(self.attn_out, ctx, residual=h))
        return self.ln_ffn(_linear(self.ffn_out, _linear(self.ffn_in, h, gelu=True), residual=h))


class FusedBert(nn.Module):
    """A BERT-family encoder on the fused path; called like the transformers model it came from.

    Attributes ``embeddings`` (shared with the original model) and ``pooler`` (a copy), ``layers`` the fused layers,
    ``config`` the transformers config (so :func:`save_converted` records the architecture).
    """

    fused_kind = FUSED_KIND

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.config = model.config
        self.embeddings = model.embeddings
        heads = int(model.config.num_attention_heads)
        self.layers = nn.ModuleList(FusedBertLayer(layer, heads) for layer in model.encoder.layer)
        pooler = getattr(model, "pooler", None)
        self.pooler = None if pooler is None else copy.deepcopy(pooler)  # converting it leaves the model as it was

    @torch.no_grad()
    def forward(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                token_type_ids: Optional[torch.Tensor] = None, **unused: Any) -> Any:
        """Encode ``input_ids`` (batch, seq) (inference only: no gradients).

        Returns
        -------
        transformers.modeling_outputs.BaseModelOutputWithPooling
            ``last_hidden_state`` (batch, seq, hidden), equal to the dense model's at the real
            tokens and zero at padded ones; ``pooler_output`` when the model has a pooler.
        """
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        emb = self.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)
        batch, seq, hidden = emb.shape
        if attention_mask is None or bool(attention_mask.all()):
            index, key_mask, cols, grid = None, None, None, (batch, seq)
            h = emb.reshape(batch * seq, hidden)
        else:
            mask = attention_mask.bool()
            cols = mask.any(0).nonzero().squeeze(1)  # columns with a real token in some sequence
            mask = mask.index_select(1, cols)
            grid = (batch, int(cols.numel()))
            index = mask.reshape(-1).nonzero().squeeze(1)
            key_mask = mask[:, None, None, :]
            h = emb.index_select(1, cols).reshape(-1, hidden).index_select(0, index)
        for layer in self.layers:
            h = layer(h, index, grid, key_mask)
        if index is None:
            out = h.view(batch, seq, hidden)
        else:
            out = h.new_zeros(grid[0] * grid[1], hidden).index_copy_(0, index, h).view(*grid, hidden)
            out = out.new_zeros(batch, seq, hidden).index_copy_(1, cols, out)
        pooled = self.pooler(out) if self.pooler is not None else None
        return BaseModelOutputWithPooling(last_hidden_state=out, pooler_output=pooled)


def why_not_bert(model: nn.Module) -> Optional[str]:
    """Why ``model`` cannot take the fused path, or None when it can.

    Parameters
    ----------
    model : nn.Module
        Any model; the fused path takes a transformers base encoder with BERT's layer layout,
        exact GELU, absolute positions and no cross-attention.

    Returns
    -------
    str or None
        A short reason (for the one-line fallback message), None for a BERT-family encoder.
    """
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "num_attention_heads"):
        return f"{type(model).__name__} is not a transformers encoder"
    layers = getattr(getattr(model, "encoder", None), "layer", None)
    if getattr(model, "embeddings", None) is None or not isinstance(layers, nn.ModuleList) or not len(layers):
        return f"{type(model).__name__} lacks BERT's embeddings/encoder.layer layout (pass the base model)"
    if getattr(config, "is_decoder", False) or getattr(config, "add_cross_attention", False):
        return "it is a decoder or has cross-attention"
    if getattr(config, "hidden_act", None) != "gelu":
        return f"hidden_act is {getattr(config, 'hidden_act', None)!r}, the fused path fuses exact 'gelu'"
    if getattr(config, "position_embedding_type", "absolute") != "absolute":
        return "its position embeddings are not absolute"
    for layer in layers:
        for names in PARTS.values():
            for name in names:
                try:
                    if type(layer.get_submodule(name)) is not nn.Linear:
                        return f"encoder layer part {name} is not an nn.Linear"
                except AttributeError:
                    return f"encoder layers lack {name} (not BERT's layout)"
        if not isinstance(getattr(getattr(layer, "output", None), "LayerNorm", None), nn.LayerNorm):
            return "encoder layers lack output.LayerNorm (not BERT's layout)"
    return None


def fuse_bert(model: nn.Module) -> FusedBert:
    """The fused-path model of a BERT-family encoder (checked with :func:`why_not_bert`).

    Parameters
    ----------
    model : nn.Module
        A transformers base encoder (BertModel, RobertaModel, ...), left unchanged: its embeddings
        and LayerNorms are shared, its pooler and Linear weights copied (masks applied).

    Returns
    -------
    FusedBert
        In eval mode, plain nn.Linear layers named ``layers.<i>.{qkv,attn_out,ffn_in,ffn_out}``.
    """
    return FusedBert(model).eval()


def fused_names(model: nn.Module, selected: set[str]) -> list[str]:
    """The fused Linears whose every part is in ``selected`` (transformers names), plus selected others.

    Parameters
    ----------
    model : nn.Module
        The transformers model (names as in ``model.named_modules()``).
    selected : set[str]
        Its Linear layers chosen for conversion.

    Returns
    -------
    list[str]
        Names in the :class:`FusedBert` (``layers.<i>.qkv``, ..., ``pooler.dense``).
    """
    out = []
    for i in range(len(model.encoder.layer)):
        for fused, parts in PARTS.items():
            if all(f"encoder.layer.{i}.{p}" in selected for p in parts):
                out.append(f"layers.{i}.{fused}")
    out += sorted(n for n in selected if n.startswith("pooler."))
    return out
