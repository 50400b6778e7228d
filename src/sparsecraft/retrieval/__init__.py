"""Sparse retrieval: BM25, an inverted index with exact top-k, inference-free learned sparse documents.

* :mod:`.index`: :class:`InvertedIndex` (CSR posting lists, exact top-k over the query's terms),
  IDF, MRR@k / recall@k.
* :mod:`.bm25`: Okapi :class:`BM25` over token ids.
* :mod:`.encoder`: :class:`SparseDocEncoder` (Geng et al. 2024, inference-free: queries are
  tokenizer lookup + IDF), ``REGULARIZERS`` (``flops``, ``idf_flops``), training and pruning.
* :mod:`.dense`: :class:`DenseRetriever`, the mean-pooled MiniLM baseline.
* :mod:`.pydoc`: the offline retrieval task built from pydoc topics.
"""
from .bm25 import BM25, term_counts
from .dense import DenseRetriever, mean_pool
from .encoder import (
    REGULARIZERS,
    IdfQueryEncoder,
    SparseDocEncoder,
    flops,
    prune_top_terms,
    query_matrix,
    to_index,
    tokenize,
    train_sparse_encoder,
)
from .index import InvertedIndex, inverse_document_frequency, mrr_at_k, recall_at_k, top_k
from .pydoc import RetrievalData, pydoc_retrieval

__all__ = [
    "BM25",
    "REGULARIZERS",
    "DenseRetriever",
    "IdfQueryEncoder",
    "InvertedIndex",
    "RetrievalData",
    "SparseDocEncoder",
    "flops",
    "inverse_document_frequency",
    "mean_pool",
    "mrr_at_k",
    "prune_top_terms",
    "pydoc_retrieval",
    "query_matrix",
    "recall_at_k",
    "term_counts",
    "to_index",
    "tokenize",
    "top_k",
    "train_sparse_encoder",
]
