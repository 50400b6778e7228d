"""Real English text shipped with Python (``pydoc_data.topics``), a byte tokenizer and LM windows.

The pydoc topics are the language reference sections behind ``help("assert")`` etc. (about 460 k
characters in Python 3.11). The exact text depends on the Python minor version, so results are
deterministic per interpreter version.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import SparsecraftError, check_positive_int
from .base import DataSplits


@dataclass(frozen=True)
class TextSplits:
    """Disjoint lists of paragraphs: ``calibration`` (for calibrated pruning), ``eval``, ``train``."""

    calibration: list[str]
    eval: list[str]
    train: list[str]


def paragraphs(min_chars: int = 40) -> list[str]:
    """All distinct paragraphs (blank-line separated) of the pydoc topics, in topic-name order.

    Parameters
    ----------
    min_chars : int, default=40
        Shorter paragraphs (stripped) are skipped.

    Returns
    -------
    list of str
    """
    from pydoc_data.topics import topics

    seen: set[str] = set()
    out: list[str] = []
    for key in sorted(topics):
        for block in topics[key].split("\n\n"):
            text = block.strip("\n")
            if len(text.strip()) >= min_chars and text not in seen:
                seen.add(text)
                out.append(text)
    return out


def load_text(
    seed: int = 0, calib_fraction: float = 0.1, eval_fraction: float = 0.1, min_chars: int = 40
) -> TextSplits:
    """Shuffle the distinct paragraphs with ``seed`` and cut them into calibration/eval/train.

    The sets are disjoint by construction (paragraphs are de-duplicated first).

    Parameters
    ----------
    seed : int, default=0
    calib_fraction, eval_fraction : float, default=0.1
        Shares of the paragraphs in the calibration and eval sets, in (0, 1) with sum < 1.
    min_chars : int, default=40
        See :func:`paragraphs`.

    Returns
    -------
    TextSplits
    """
    fractions = (float(calib_fraction), float(eval_fraction))
    if any(not 0.0 < f < 1.0 for f in fractions) or sum(fractions) >= 1.0:
        raise SparsecraftError(
            f"calib_fraction and eval_fraction must be in (0, 1) with sum < 1, got {fractions}"
        )
    paras = paragraphs(min_chars)
    order = torch.randperm(len(paras), generator=torch.Generator().manual_seed(seed)).tolist()
    n_calib = max(1, round(fractions[0] * len(paras)))
    n_eval = max(1, round(fractions[1] * len(paras)))
    shuffled = [paras[i] for i in order]
    return TextSplits(
        calibration=shuffled[:n_calib],
        eval=shuffled[n_calib : n_calib + n_eval],
        train=shuffled[n_calib + n_eval :],
    )


class ByteTokenizer:
    """UTF-8 byte-level tokenizer: every string maps to ids in ``[0, 256)``, nothing is unknown."""

    vocab_size = 256

    def encode(self, text: str) -> torch.Tensor:
        """UTF-8 bytes of a string.

        Parameters
        ----------
        text : str

        Returns
        -------
        torch.Tensor of shape (n_bytes,), int64
        """
        return torch.tensor(list(text.encode("utf-8")), dtype=torch.int64)

    def decode(self, ids: torch.Tensor | list[int]) -> str:
        """Inverse of :meth:`encode`; invalid byte sequences become U+FFFD.

        Parameters
        ----------
        ids : torch.Tensor or list of int
            Byte values in [0, 256).

        Returns
        -------
        str
        """
        values = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
        return bytes(values).decode("utf-8", errors="replace")

    def encode_paragraphs(self, texts: list[str], separator: str = "\n\n") -> torch.Tensor:
        """Encode paragraphs joined by ``separator`` into one token stream.

        Parameters
        ----------
        texts : list of str
        separator : str, default="\\n\\n"

        Returns
        -------
        torch.Tensor of shape (n_bytes,), int64
        """
        return self.encode(separator.join(texts))


def lm_windows(
    ids: torch.Tensor, seq_len: int, stride: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cut a 1-D token stream into next-token-prediction pairs.

    Parameters
    ----------
    ids : torch.Tensor of shape (n_tokens,)
    seq_len : int
        Window length T.
    stride : int, optional
        Start offset between windows (default ``seq_len``: non-overlapping inputs).

    Returns
    -------
    inputs, targets : torch.Tensor of shape (N, seq_len)
        Window ``i`` starts at ``i * stride``; ``targets[i, t] == inputs[i, t + 1]`` for
        ``t < seq_len - 1``. A stream shorter than ``seq_len + 1`` tokens gives ``N = 0``.
    """
    check_positive_int(seq_len, "seq_len")
    stride = check_positive_int(seq_len if stride is None else stride, "stride")
    if ids.dim() != 1:
        raise SparsecraftError(f"ids must be a 1-D token stream, got shape {tuple(ids.shape)}")
    if len(ids) < seq_len + 1:
        empty = ids.new_empty((0, seq_len))
        return empty, empty.clone()
    chunks = ids.unfold(0, seq_len + 1, stride)
    return chunks[:, :-1].contiguous(), chunks[:, 1:].contiguous()


def load_text_lm(seed: int = 0, seq_len: int = 64, stride: int | None = None) -> DataSplits:
    """Byte-level LM data: train windows from the train paragraphs, test from eval, calib from calibration.

    Parameters
    ----------
    seed : int, default=0
        Seeds the paragraph split (see :func:`load_text`).
    seq_len : int, default=64
    stride : int, optional
        See :func:`lm_windows`.

    Returns
    -------
    DataSplits
        Task ``"lm"`` over 256 byte values, inputs (N, seq_len) int64.
    """
    splits = load_text(seed)
    tok = ByteTokenizer()
    train_x, train_y = lm_windows(tok.encode_paragraphs(splits.train), seq_len, stride)
    test_x, test_y = lm_windows(tok.encode_paragraphs(splits.eval), seq_len, stride)
    calib_x, _ = lm_windows(tok.encode_paragraphs(splits.calibration), seq_len, stride)
    return DataSplits(
        name="text",
        train_x=train_x,
        train_y=train_y,
        test_x=test_x,
        test_y=test_y,
        num_classes=tok.vocab_size,
        input_shape=(seq_len,),
        task="lm",
        calib_x=calib_x,
    )
