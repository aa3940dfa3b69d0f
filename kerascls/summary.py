"""Per-layer cost table: output shape, activation memory, parameters, mult-adds.

The layout follows Justin Johnson's AlexNet table (EECS 498-007, lecture 8); the counting
conventions follow torchinfo so numbers can be checked against PyTorch references:

* parameters exclude running statistics (BatchNorm's moving mean/variance are buffers in
  PyTorch, not parameters) — the convention of torchvision's published counts;
* mult-adds (MACs) of a layer with weights are its parameters (bias included) times the
  positions it is applied at: every output pixel for convolutions, every leading position
  for Dense (1 for a classifier), once for anything else (norms, layer scale). Weightless
  layers (pooling, activations, adds) cost 0. This is torchinfo's "Total mult-adds":
  AlexNet at 224×224, 1000 classes = 714,682,664.
* activation memory is the layer's float32 output for one image, in KB (1024 bytes).

Layers nested in a custom layer (SE's two Dense) are counted into their parent's row; a
nested functional model (a keras.applications backbone) is expanded into its own rows.
"""

from __future__ import annotations

import math

import keras

from kerascls.layers.types import Shape

STATISTICS = ("moving_mean", "moving_variance")


def layer_params(layer: keras.layers.Layer) -> int:
    """Parameters of a layer and its sub-layers, running statistics excluded."""
    return sum(math.prod(w.shape) for w in layer.weights if w.name not in STATISTICS)


def count_params(model: keras.Model) -> int:
    """Parameters as PyTorch counts them (what torchvision/timm reference numbers mean)."""
    return layer_params(model)


def _positions(output_shape: Shape) -> int:
    """Positions a weight is applied at: all but batch and channel axes (static dims)."""
    dims = [d for d in output_shape[1:-1] if d is not None]
    return math.prod(dims) if dims else 1


def _is_conv(layer) -> bool:
    return isinstance(layer, keras.layers.Conv2D | keras.layers.DepthwiseConv2D
                      | keras.layers.SeparableConv2D | keras.layers.Conv1D
                      | keras.layers.Conv3D | keras.layers.Conv2DTranspose)


def _own_params(layer) -> int:
    """Parameters of the layer itself, not of its tracked sub-layers."""
    own = (getattr(layer, "_trainable_variables", [])
           + getattr(layer, "_non_trainable_variables", []))
    return sum(math.prod(w.shape) for w in own if w.name not in STATISTICS)


def _sublayers(layer) -> list:
    return [sub for sub in getattr(layer, "_layers", []) if isinstance(sub, keras.layers.Layer)]


def _sub_output_shape(sub, fallback):
    """A nested layer's output shape from the shape it was built with, else the parent's."""
    shapes = getattr(sub, "_build_shapes_dict", None) or {}
    if len(shapes) == 1:
        try:
            return sub.compute_output_shape(tuple(next(iter(shapes.values()))))
        except Exception:  # noqa: BLE001 - a layer that cannot say falls back to its parent
            pass
    return fallback


def layer_macs(layer: keras.layers.Layer, output_shape: Shape) -> int:
    """Mult-adds of one layer (and its sub-layers) for one image, torchinfo's convention."""
    own = _own_params(layer)
    if own and (_is_conv(layer) or isinstance(layer, keras.layers.Dense
                                              | keras.layers.EinsumDense)):
        macs = own * _positions(output_shape)
    else:
        macs = own
    for sub in _sublayers(layer):
        macs += layer_macs(sub, _sub_output_shape(sub, output_shape))
    return macs


def _leaf_layers(model: keras.Model, prefix: str = ""):
    """(name, layer) in graph order, expanding nested functional / sequential models."""
    for layer in model.layers:
        if isinstance(layer, keras.Model) and hasattr(layer, "_operations") and layer.layers:
            yield from _leaf_layers(layer, f"{prefix}{layer.name}/")
        else:
            yield f"{prefix}{layer.name}", layer


def _output_shape(layer) -> tuple:
    out = layer.output
    if isinstance(out, (list, tuple)):
        out = out[0]
    return tuple(out.shape)


def layer_table(model: keras.Model) -> list[dict]:
    """One row per layer: name, type, output channels and spatial size, costs.

    Keys: ``layer``, ``type``, ``output_shape``, ``channels``, ``size`` ("H" or "H×W",
    "" for vectors), ``memory_kb`` (float32 output), ``params``, ``macs``.
    """
    rows = []
    for name, layer in _leaf_layers(model):
        shape = _output_shape(layer)
        spatial = list(shape[1:-1])
        size = "" if not spatial else (
            str(spatial[0]) if len(set(spatial)) == 1 else "×".join(map(str, spatial)))
        elements = math.prod(d for d in shape[1:] if d is not None)
        rows.append({
            "layer": name, "type": type(layer).__name__, "output_shape": shape,
            "channels": shape[-1], "size": size, "memory_kb": elements * 4 / 1024,
            "params": layer_params(layer), "macs": layer_macs(layer, shape)})
    return rows


def count_macs(model: keras.Model) -> int:
    """Total mult-adds for one image (torchinfo's "Total mult-adds")."""
    return sum(row["macs"] for row in layer_table(model))


def format_summary(model: keras.Model, *, show_zero: bool = True) -> str:
    """The table as text, then totals: parameters, MACs, activation memory.

    Args:
        model: a built Keras model (functional or sequential).
        show_zero: also list layers with no parameters and no MACs (pooling, activations).
    """
    rows = layer_table(model)
    shown = [r for r in rows if show_zero or r["params"] or r["macs"]]
    width = max([len("layer")] + [len(r["layer"]) for r in shown])
    header = (f"{'layer':<{width}}  {'type':<26} {'C':>6} {'H/W':>9} "
              f"{'memory (KB)':>12} {'params (k)':>11} {'MACs (M)':>10}")
    lines = [header, "-" * len(header)]
    for r in shown:
        lines.append(f"{r['layer']:<{width}}  {r['type'][:26]:<26} {r['channels']:>6} "
                     f"{r['size']:>9} {r['memory_kb']:>12,.1f} {r['params'] / 1e3:>11,.1f} "
                     f"{r['macs'] / 1e6:>10,.2f}")
    params, macs = sum(r["params"] for r in rows), sum(r["macs"] for r in rows)
    memory = sum(r["memory_kb"] for r in rows)
    lines += ["-" * len(header),
              f"total parameters: {params:,} ({params / 1e6:.2f} M)",
              f"total MACs: {macs:,} ({macs / 1e6:.2f} M)",
              f"total activation memory: {memory:,.1f} KB ({memory / 1024:.2f} MB, float32, "
              "one image)"]
    return "\n".join(lines)
