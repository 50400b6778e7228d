"""scikit-learn's parameter protocol for the coding estimators, without importing scikit-learn.

Convention (scikit-learn's): an estimator's parameters are exactly the keyword arguments of its
``__init__``, stored unchanged as attributes of the same name; checks happen in ``fit``. With that,
:class:`ParamsMixin` reads the parameters back from the signature, and ``sklearn.base.clone``,
``GridSearchCV`` and ``Pipeline`` treat the estimators like their own (with scikit-learn's default
tags). scikit-learn itself stays an optional extra (``sparsecraft[data]``): ``sparsecraft.coding``
needs only numpy (and torch for convolutional sparse coding).
"""
from __future__ import annotations

import inspect
from typing import Any, TypeVar

from ..errors import SparsecraftError

_Estimator = TypeVar("_Estimator", bound="ParamsMixin")
_KEYWORD_KINDS = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


class ParamsMixin:
    """``get_params`` / ``set_params`` from the ``__init__`` signature, as ``sklearn.base.BaseEstimator``."""

    @classmethod
    def _param_names(cls) -> list[str]:
        """The ``__init__`` keyword arguments, in signature order."""
        params = inspect.signature(cls.__init__).parameters.values()
        return [p.name for p in params if p.name != "self" and p.kind in _KEYWORD_KINDS]

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Parameters of this estimator.

        Parameters
        ----------
        deep : bool, default=True
            Also return the parameters of parameters that are estimators themselves, as
            ``<parameter>__<name>``.

        Returns
        -------
        params : dict
            Parameter name -> current value (the object stored, not a copy).
        """
        params = {name: getattr(self, name) for name in self._param_names()}
        if deep:
            for name, value in list(params.items()):
                if hasattr(value, "get_params") and not isinstance(value, type):
                    params.update((f"{name}__{key}", v) for key, v in value.get_params(deep=True).items())
        return params

    def __sklearn_tags__(self) -> Any:
        """scikit-learn's default estimator tags (scikit-learn >= 1.6 asks for them; imported only then)."""
        from sklearn.base import BaseEstimator

        return BaseEstimator.__sklearn_tags__(self)  # type: ignore[arg-type]

    def set_params(self: _Estimator, **params: Any) -> _Estimator:
        """Set parameters; they are checked when the estimator is next fitted.

        Parameters
        ----------
        **params
            ``name=value`` for this estimator's parameters, or ``<parameter>__<name>=value`` for a
            parameter of a parameter that is an estimator.

        Returns
        -------
        self
            This estimator.

        Raises
        ------
        SparsecraftError
            A name that is not a parameter (the message lists the valid ones).
        """
        valid = self._param_names()
        nested: dict[str, dict[str, Any]] = {}
        for key, value in params.items():
            name, nested_key, sub = key.partition("__")
            if name not in valid or (nested_key and not hasattr(getattr(self, name), "set_params")):
                raise SparsecraftError(
                    f"{type(self).__name__} has no parameter {key!r}; valid parameters: {', '.join(valid)}"
                )
            if nested_key:
                nested.setdefault(name, {})[sub] = value
            else:
                setattr(self, name, value)
        for name, sub_params in nested.items():
            getattr(self, name).set_params(**sub_params)
        return self
