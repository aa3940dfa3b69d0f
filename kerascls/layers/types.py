"""Type names for annotations: Keras tensors are backend objects with no common class."""

from __future__ import annotations

from typing import Any

Tensor = Any  # a backend tensor (tf.Tensor, jax.Array, torch.Tensor) or a symbolic KerasTensor
Shape = tuple[int | None, ...]  # a tensor shape; None is a dimension known only at run time
Config = dict[str, Any]  # what ``get_config`` returns (JSON-serializable)
