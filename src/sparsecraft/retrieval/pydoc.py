"""A retrieval task built offline from Python's pydoc topics (``pydoc_data.topics``).

Each paragraph (blank-line separated, whitespace collapsed) of a topic whose text is long enough
becomes one query-document pair: the query is the paragraph's first sentence, the document is the
rest of the paragraph (the query text is removed from it, so a query never matches its own text
verbatim). Every document is in the corpus; the queries are split by *topic*: the topics (sorted by
name, shuffled by ``seed``) are cut so that about ``test_fraction`` of them give test queries, the
others give training queries. A training query and a test query therefore never come from the same
topic, and a test query whose text also occurs as a training query (or twice among the test
queries) is dropped, so no query text is shared between the splits.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from ..errors import SparsecraftError

_SENTENCE_END = re.compile(r"(?<=[.!?:])\s+(?=[A-Z(\"'`])")


@dataclass
class RetrievalData:
    """Documents, training and test queries; ``*_docs[i]`` is the one relevant document of query ``i``.

    Attributes
    ----------
    docs : list[str]
        N documents.
    topics : list[str]
        [N] the pydoc topic each document comes from.
    train_queries, test_queries : list[str]
    train_docs, test_docs : list[int]
        Index into ``docs`` of each query's relevant document.
    """

    docs: list[str]
    topics: list[str]
    train_queries: list[str]
    train_docs: list[int]
    test_queries: list[str]
    test_docs: list[int]


def split_first_sentence(text: str) -> tuple[str, str]:
    """``(first sentence, rest)`` of a paragraph; ``rest`` is empty when there is one sentence."""
    parts = _SENTENCE_END.split(text, maxsplit=1)
    return parts[0].strip(), (parts[1].strip() if len(parts) > 1 else "")


def pydoc_retrieval(min_doc_chars: int = 120, min_query_words: int = 5, test_fraction: float = 0.3,
                    seed: int = 0) -> RetrievalData:
    """The pydoc retrieval task (see the module docstring for how it is built and split).

    Parameters
    ----------
    min_doc_chars : int, default=120
        Paragraphs whose rest (after the first sentence) is shorter are skipped.
    min_query_words : int, default=5
        Paragraphs whose first sentence has fewer words are skipped.
    test_fraction : float, default=0.3
        Fraction of topics whose queries are test queries, in (0, 1).
    seed : int, default=0
        Seeds the topic shuffle.

    Returns
    -------
    RetrievalData
    """
    from pydoc_data.topics import topics

    if not 0.0 < test_fraction < 1.0:
        raise SparsecraftError(f"test_fraction must be in (0, 1), got {test_fraction}")
    docs: list[str] = []
    doc_topics: list[str] = []
    queries: list[str] = []
    seen: set[str] = set()
    for name in sorted(topics):
        for block in re.split(r"\n\s*\n", topics[name]):
            para = " ".join(block.split())
            query, rest = split_first_sentence(para)
            if len(rest) < min_doc_chars or len(query.split()) < min_query_words or rest in seen:
                continue
            seen.add(rest)
            docs.append(rest)
            doc_topics.append(name)
            queries.append(query)
    if not docs:
        raise SparsecraftError(f"no paragraph passes min_doc_chars={min_doc_chars} and "
                               f"min_query_words={min_query_words}; lower them")
    names = sorted(set(doc_topics))
    order = np.random.default_rng(seed).permutation(len(names))
    test_topics = {names[i] for i in order[: max(1, round(test_fraction * len(names)))]}
    train = [i for i, t in enumerate(doc_topics) if t not in test_topics]
    train_texts = {queries[i] for i in train}
    test_counts: dict[str, int] = {}
    for i, t in enumerate(doc_topics):
        if t in test_topics:
            test_counts[queries[i]] = test_counts.get(queries[i], 0) + 1
    test = [i for i, t in enumerate(doc_topics)
            if t in test_topics and queries[i] not in train_texts and test_counts[queries[i]] == 1]
    return RetrievalData(docs, doc_topics, [queries[i] for i in train], train, [queries[i] for i in test], test)
