"""Make Keras 3 weights visible to TFP's variable tracking.

TFP's ``Chain``, ``Invert`` and ``TransformedDistribution`` are ``tf.Module``s: their
``trainable_variables`` walk the attributes of every nested module looking for ``tf.Variable``
instances. A Keras 3 variable is not one (the TensorFlow backend keeps the real ``tf.Variable``
in ``.value``), and plain Keras sub-layers (a coupling's conditioner) are not modules at all, so
a composition of Keras layers reports ``trainable_variables == ()``.

`expose_variables_to_tfp` stores on an object a live, read-only mapping from an index to the
underlying ``tf.Variable`` of each of its owner's Keras weights (sub-layers included). The
module walk flattens mappings, so it finds those variables, read at walk time (weights created
after the composition was built are included). Keras itself never sees the mapping: Keras's
``layer.trainable_variables`` still returns Keras variables and ``fit`` is unchanged.
"""

from __future__ import annotations

import collections.abc
from typing import Any, Iterator

import tensorflow as tf

__all__ = ["KerasVariableView", "expose_variables_to_tfp"]

_ATTRIBUTE = "_tfp_variable_view"


class KerasVariableView(collections.abc.Mapping):
    """``{i: tf.Variable}`` over the Keras weights of ``owner`` (a Keras layer or model).

    Trainable weights (as Keras counts them: a frozen layer has none) come first, then the
    non-trainable ones whose ``tf.Variable`` is itself non-trainable (so TFP's
    ``trainable_variables`` agrees with Keras's and ``variables`` lists both).
    """

    def __init__(self, owner: Any):
        self._owner = owner

    def _variables(self) -> list[tf.Variable]:
        owner = self._owner
        found = [_underlying(v) for v in owner.trainable_variables]
        found += [
            _underlying(v) for v in owner.non_trainable_variables if not _underlying(v).trainable
        ]
        return found

    def __getitem__(self, index: int) -> tf.Variable:
        return self._variables()[index]

    def __iter__(self) -> Iterator[int]:
        return iter(range(len(self._variables())))

    def __len__(self) -> int:
        return len(self._variables())

    def __repr__(self) -> str:
        return f"<KerasVariableView of {getattr(self._owner, 'name', type(self._owner).__name__)}>"


def _underlying(variable: Any) -> tf.Variable:
    """The ``tf.Variable`` behind a Keras 3 variable (a ``tf.Variable`` is returned as is)."""
    return variable if isinstance(variable, tf.Variable) else variable.value


def expose_variables_to_tfp(module: Any, owner: Any | None = None) -> None:
    """Lets ``module`` (a ``tf.Module``, e.g. a bijector) report ``owner``'s Keras weights.

    ``owner`` defaults to ``module`` itself (a layer that is also a bijector). The attribute is
    set with ``object.__setattr__`` so neither Keras's nor TensorFlow's attribute tracking wraps
    or saves it.
    """
    object.__setattr__(module, _ATTRIBUTE, KerasVariableView(module if owner is None else owner))
