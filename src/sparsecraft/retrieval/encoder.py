"""Inference-free learned sparse retrieval with an IDF-aware FLOPS regulariser.

Geng et al. 2024, "Towards Competitive Search Relevance For Inference-Free Learned Sparse
Retrievers" (arXiv:2411.04403). Documents are encoded once, at indexing time, into non-negative
vocabulary-weighted vectors (SPLADE-style: ``w_d = max_tokens log(1 + relu(h W^T + c))``); a query
is encoded with no model at all, by tokenizer lookup and IDF weights (``q_t = idf(t)`` for each
distinct query token), so the score is ``s(q, d) = sum_{t in q} idf(t) * w_dt``.

Sparsity comes from the FLOPS regulariser (Paria et al. 2020), ``sum_j (mean_i r_ij)^2`` over a batch
of document vectors ``r``. With an IDF query the score reads a document through its IDF-weighted
weights ``r_ij = idf_j * w_ij``:

* ``flops`` penalises those score contributions alike for every term, ``sum_j (mean_i idf_j w_ij)^2``
  (the FLOPS a Siamese model puts on the vectors it scores with). To keep the overall strength
  comparable, the per-term weight ``idf_j^2`` is divided by its mean over the output vocabulary.
* ``idf_flops`` (the paper's IDF-aware FLOPS) penalises a term's contribution in proportion to
  ``1 / idf_j^2``, i.e. ``sum_j (mean_i w_ij)^2`` on the document weights: rare, informative terms
  are pushed down less than frequent ones, which the paper finds keeps relevance at equal sparsity.

Here the MiniLM body (sentence-transformers all-MiniLM-L6-v2, which ships without an MLM head) is
frozen; the trained part is the vocabulary head: a residual MLP on the token states and the
projection ``W`` initialised from the tied word-embedding matrix (``logits = h E^T``), restricted to
an output vocabulary (the token ids of the corpus and training queries) so training fits a CPU.
The paper's second improvement, ensemble distillation from dense and sparse teachers, is not
implemented.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from ..errors import SparsecraftError
from ..registry import Registry
from .index import InvertedIndex

Regularizer = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
REGULARIZERS: Registry[Regularizer] = Registry("sparsity regulariser")


def flops(weights: torch.Tensor, term_weights: torch.Tensor | None = None) -> torch.Tensor:
    """FLOPS regulariser ``sum_j c_j (mean_i w_ij)^2`` (Paria et al. 2020), ``c_j = 1`` by default.

    Parameters
    ----------
    weights : torch.Tensor
        [B, V] non-negative document vectors of a batch.
    term_weights : torch.Tensor, optional
        [V] per-term penalty weights ``c``.

    Returns
    -------
    torch.Tensor
        Scalar.
    """
    if weights.ndim != 2 or weights.shape[0] == 0:
        raise SparsecraftError("FLOPS needs a [batch, vocab] matrix with a non-empty batch, "
                               f"got {tuple(weights.shape)}")
    sq = weights.mean(dim=0) ** 2
    if term_weights is None:
        return sq.sum()
    if term_weights.shape != sq.shape:
        raise SparsecraftError(f"term_weights must have shape {tuple(sq.shape)}, got {tuple(term_weights.shape)}")
    return (term_weights * sq).sum()


@REGULARIZERS.register("flops")
def plain_flops(weights: torch.Tensor, idf: torch.Tensor) -> torch.Tensor:
    """FLOPS on the IDF-weighted score contributions: ``c_j = idf_j^2 / mean(idf^2)`` ([B, V] -> scalar)."""
    sq = idf.float() ** 2
    return flops(weights, sq / sq.mean())


@REGULARIZERS.register("idf_flops")
def idf_aware_flops(weights: torch.Tensor, idf: torch.Tensor) -> torch.Tensor:
    """IDF-aware FLOPS: a term's score contribution ``idf_j w_ij`` is penalised by ``1 / idf_j^2``, so ``c_j = 1``."""
    del idf  # the IDF enters through the query side of the score
    return flops(weights)


def special_ids(tokenizer: Any) -> set[int]:
    """Token ids of the tokenizer's special tokens ([CLS], [SEP], [PAD], ...)."""
    return {int(i) for i in tokenizer.all_special_ids}


def tokenize(tokenizer: Any, texts: Sequence[str], max_length: int = 128) -> list[list[int]]:
    """Token ids of each text without special tokens, truncated to ``max_length - 2`` (room for [CLS]/[SEP])."""
    if isinstance(texts, str):
        raise SparsecraftError("give a list of texts, not one string")
    out = tokenizer(list(texts), add_special_tokens=False, truncation=True, max_length=max_length - 2)
    return [list(ids) for ids in out["input_ids"]]


class IdfQueryEncoder:
    """Inference-free query encoding: the distinct query tokens, each weighted by its IDF.

    Parameters
    ----------
    tokenizer : a transformers tokenizer
    idf : np.ndarray
        [V] IDF of every token id of the tokenizer.
    """

    def __init__(self, tokenizer: Any, idf: np.ndarray) -> None:
        if len(idf) < tokenizer.vocab_size:
            raise SparsecraftError(f"idf has {len(idf)} entries but the tokenizer has {tokenizer.vocab_size} ids")
        self.tokenizer, self.idf = tokenizer, np.asarray(idf, dtype=np.float32)

    def encode_ids(self, token_ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """``(terms, weights)`` of a tokenized query: sorted distinct ids and their IDF."""
        terms = np.unique(np.asarray(token_ids, dtype=np.int64))
        if len(terms) and (terms[0] < 0 or terms[-1] >= len(self.idf)):
            raise SparsecraftError(f"token id outside [0, {len(self.idf)}) in the query; use the index's tokenizer")
        return terms, self.idf[terms]

    def encode(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """``(terms, weights)`` of a query text (tokenizer lookup + IDF, no model)."""
        return self.encode_ids(self.tokenizer(text, add_special_tokens=False)["input_ids"])


class SparseDocEncoder(nn.Module):
    """Frozen transformer body + trainable vocabulary head -> sparse non-negative document vectors.

    Parameters
    ----------
    body : nn.Module
        A transformers BERT-family encoder (e.g. ``load_pretrained("minilm")[0]``); frozen.
    vocab : Sequence[int]
        V' output token ids (distinct, non-special); the vectors have one weight per id.
    hidden : int, default=0
        Width of the head's residual MLP; 0 means the body's hidden size.

    Notes
    -----
    ``head(states, mask)`` maps token states [B, L, H] to ``max_l log(1 + relu(g(h_l) W^T + c))``
    over the non-padding tokens, where ``g(h) = h + MLP(h)`` (the MLP's last layer starts at zero)
    and ``W`` [V', H] starts as the rows of the word-embedding matrix for ``vocab``; ``c`` starts at 0.
    """

    def __init__(self, body: nn.Module, vocab: Sequence[int], hidden: int = 0) -> None:
        super().__init__()
        emb = body.get_input_embeddings().weight
        ids = torch.as_tensor(list(vocab), dtype=torch.long)
        if ids.numel() == 0 or len(set(ids.tolist())) != ids.numel():
            raise SparsecraftError("the output vocabulary must be a non-empty list of distinct token ids")
        if ids.min() < 0 or ids.max() >= emb.shape[0]:
            raise SparsecraftError(f"output vocabulary ids must be in [0, {emb.shape[0]}), "
                                   f"got {int(ids.min())}..{int(ids.max())}")
        self.body = body.eval().requires_grad_(False)
        width = int(emb.shape[1])
        self.register_buffer("vocab", ids)
        self.mlp = nn.Sequential(nn.Linear(width, hidden or width), nn.GELU(), nn.Linear(hidden or width, width))
        nn.init.zeros_(self.mlp[2].weight)
        nn.init.zeros_(self.mlp[2].bias)
        self.proj = nn.Linear(width, ids.numel())
        with torch.no_grad():
            self.proj.weight.copy_(emb[ids])
            self.proj.bias.zero_()

    @torch.no_grad()
    def token_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """[B, L, H] last hidden states of the frozen body (no gradient)."""
        return self.body(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    def head(self, states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """[B, V'] document vectors from [B, L, H] token states and the [B, L] attention mask."""
        h = states + self.mlp(states)
        w = torch.log1p(torch.relu(self.proj(h)))
        return (w * attention_mask.unsqueeze(-1).to(w.dtype)).amax(dim=1)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """[B, V'] document vectors of tokenized documents ([B, L] ids and mask)."""
        return self.head(self.token_states(input_ids, attention_mask), attention_mask)


def prune_top_terms(weights: torch.Tensor, max_terms: int) -> torch.Tensor:
    """Keep each row's ``max_terms`` largest weights (ties: lower column), zero the rest: bounds the index size.

    Parameters
    ----------
    weights : torch.Tensor
        [N, V'] non-negative document vectors.
    max_terms : int
        Non-zeros kept per document (> 0).

    Returns
    -------
    torch.Tensor
        [N, V'] with at most ``max_terms`` non-zeros per row.
    """
    if isinstance(max_terms, bool) or not isinstance(max_terms, int) or max_terms <= 0:
        raise SparsecraftError(f"max_terms must be a positive integer, got {max_terms!r}")
    if max_terms >= weights.shape[1]:
        return weights.clone()
    keep = torch.topk(weights, max_terms, dim=1, sorted=False).indices
    out = torch.zeros_like(weights)
    return out.scatter_(1, keep, weights.gather(1, keep))


def to_index(weights: torch.Tensor, vocab: torch.Tensor, vocab_size: int) -> InvertedIndex:
    """An :class:`InvertedIndex` over the full tokenizer vocabulary from [N, V'] vectors over ``vocab`` ids."""
    import scipy.sparse as sps

    w = weights.detach().cpu().numpy()
    rows, cols = np.nonzero(w)
    mat = sps.csr_matrix((w[rows, cols], (rows, vocab.cpu().numpy()[cols])), shape=(w.shape[0], vocab_size))
    return InvertedIndex(mat)


def query_matrix(queries: Sequence[tuple[np.ndarray, np.ndarray]], vocab: torch.Tensor) -> torch.Tensor:
    """[Q, V'] dense query vectors over the output vocabulary; terms outside it are dropped."""
    col = {int(t): j for j, t in enumerate(vocab.tolist())}
    out = torch.zeros(len(queries), len(col))
    for i, (terms, weights) in enumerate(queries):
        for t, w in zip(terms.tolist(), weights.tolist()):
            j = col.get(t)
            if j is not None:
                out[i, j] = w
    return out


def train_sparse_encoder(encoder: SparseDocEncoder, states: torch.Tensor, mask: torch.Tensor,
                         queries: torch.Tensor, doc_ids: Sequence[int], idf: torch.Tensor,
                         regularizer: str = "idf_flops", lam: float = 1e-3, steps: int = 100,
                         batch_size: int = 32, lr: float = 1e-3, warmup: float = 0.5,
                         seed: int = 0) -> list[dict[str, float]]:
    """Train the vocabulary head with in-batch contrastive loss + ``lam`` * regulariser.

    Each step takes ``batch_size`` (query, document) pairs whose documents are distinct; the scores of
    every query against every document of the batch go through a cross-entropy whose target is the
    query's own document. ``lam`` grows quadratically from 0 over the first ``warmup`` fraction of the
    steps (as SPLADE does), then stays.

    Parameters
    ----------
    encoder : SparseDocEncoder
    states : torch.Tensor
        [N, L, H] cached token states of all N documents (``encoder.token_states``).
    mask : torch.Tensor
        [N, L] their attention masks.
    queries : torch.Tensor
        [Q, V'] IDF query vectors of the training queries (:func:`query_matrix`).
    doc_ids : Sequence[int]
        [Q] the relevant document of each training query.
    idf : torch.Tensor
        [V'] IDF of the output vocabulary (for the regulariser).
    regularizer : str
        A name in ``REGULARIZERS`` (``flops``, ``idf_flops``).
    lam, steps, batch_size, lr, warmup, seed
        Regulariser weight (>= 0), Adam steps, pairs per step (>= 2), learning rate, warm-up fraction,
        seed of the batch sampling.

    Returns
    -------
    list of dict
        Per step: ``loss``, ``rank`` (contrastive), ``reg`` (unweighted regulariser), ``nnz`` (mean
        non-zeros per document of the batch).
    """
    reg_fn = REGULARIZERS.get(regularizer)
    doc_ids = torch.as_tensor(list(doc_ids), dtype=torch.long)
    if queries.shape[0] != doc_ids.numel() or queries.shape[0] < 2:
        raise SparsecraftError(f"need at least 2 training queries with one document each, got {queries.shape[0]} "
                               f"queries and {doc_ids.numel()} documents")
    if lam < 0 or steps <= 0 or batch_size < 2:
        raise SparsecraftError(f"need lam >= 0, steps > 0, batch_size >= 2; got {lam}, {steps}, {batch_size}")
    params = [p for p in encoder.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    gen = torch.Generator().manual_seed(seed)
    ramp = max(1, int(warmup * steps))
    history = []
    encoder.train()
    for step in range(steps):
        perm = torch.randperm(len(doc_ids), generator=gen)
        picked, seen = [], set()
        for i in perm.tolist():
            if int(doc_ids[i]) not in seen:
                seen.add(int(doc_ids[i]))
                picked.append(i)
            if len(picked) == batch_size:
                break
        idx = torch.as_tensor(picked)
        docs = doc_ids[idx]
        w = encoder.head(states[docs], mask[docs])
        scores = queries[idx] @ w.T
        rank = nn.functional.cross_entropy(scores, torch.arange(len(idx)))
        reg = reg_fn(w, idf)
        loss = rank + lam * min(1.0, ((step + 1) / ramp) ** 2) * reg
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append({"loss": float(loss.detach()), "rank": float(rank.detach()), "reg": float(reg.detach()),
                        "nnz": float((w > 0).sum(1).float().mean())})
    encoder.eval()
    return history
