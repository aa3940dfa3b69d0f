"""Keras 3 functional model → tf_keras functional model with the same weights (child side).

Standard layers are rebuilt from their own config; kerascls' custom layers become layers
tfmot knows (SqueezeExcite → pool, two 1×1 convs, multiply; ImagePreprocessing → Rescaling;
StochasticDepth → identity, the inference graph; AdaptiveAveragePooling2D → a whole-multiple
pool). Families covered: lenet, small_cnn, alexnet and vgg (without LRN), resnet and
se-resnet, mobilenetv3, efficientnet, efficientnet_lite and efficientnetv2 (FusedMBConv is
plain Conv2D/BatchNormalization/Activation). Any other custom layer stops the bridge with
a :class:`BridgeError` naming it. Imports tf_keras: only the child (or a test) calls this.
"""

from __future__ import annotations

from typing import Any, Callable

from kerascls.tflite.tfmot.spec import BridgeError


def _tf_keras_layers():
    """tf_keras classes for our custom layers, defined once tf_keras is importable."""
    import tensorflow as tf
    import tf_keras as tk

    class HardSigmoid(tk.layers.Layer):
        """Keras 3's ``hard_sigmoid`` (relu6(x + 3) / 6; tf_keras' is 0.2x + 0.5)."""

        def call(self, x):
            return tf.nn.relu6(x + 3.0) * (1.0 / 6.0)

    class HardSwish(tk.layers.Layer):
        """Hard-swish in ``convert.int8_hard_swish``'s spelling, which XNNPACK runs in int8;
        the calibration images give its inner tensors their ranges."""

        def call(self, x):
            return x * (tf.nn.relu6(x - (-3.0)) * (1.0 / 6.0))

    return {"HardSigmoid": HardSigmoid, "HardSwish": HardSwish}


# Keras 3 layers rebuilt from their own config (weights copied as they are).
STANDARD = {"Conv2D", "DepthwiseConv2D", "Dense", "BatchNormalization", "ReLU", "Softmax",
            "MaxPooling2D", "AveragePooling2D", "GlobalAveragePooling2D",
            "GlobalMaxPooling2D", "Flatten", "Reshape", "Dropout", "ZeroPadding2D", "Add",
            "Multiply", "Concatenate", "Activation", "Identity"}
# activations tfmot quantizes inline in Conv2D/Dense; any other becomes its own layer
INLINE_ACTIVATIONS = {"linear", "relu"}


class Rebuilder:
    """Keras 3 functional model → tf_keras functional model with the same weights.

    ``custom`` lists the tf_keras layers that need the child's output-only QuantizeConfig
    when quantized (tfmot's registry does not know them).
    """

    def __init__(self) -> None:
        import tf_keras as tk
        self.tk = tk
        self.extra = _tf_keras_layers()
        self.custom: list = []

    def build(self, model: Any) -> Any:
        tensors = {id(t): self.tk.Input(shape=t.shape[1:], name=t.name or "image")
                   for t in model.inputs}
        inputs = [tensors[id(t)] for t in model.inputs]
        for layer in model.layers:
            if type(layer).__name__ == "InputLayer":
                continue
            given = layer.input  # a functional model's layers are called once
            args = ([tensors[id(t)] for t in given] if isinstance(given, (list, tuple))
                    else tensors[id(given)])
            tensors[id(layer.output)] = self.layer(layer, args)
        outputs = [tensors[id(t)] for t in model.outputs]
        return self.tk.Model(inputs, outputs, name=model.name)

    def layer(self, layer: Any, x: Any) -> Any:
        """Apply the tf_keras equivalent of one Keras 3 layer to ``x``."""
        kind = type(layer).__name__
        handler: Callable | None = getattr(self, f"_{kind}", None)
        if handler is not None:
            return handler(layer, x)
        if kind not in STANDARD:
            raise BridgeError(
                f"layer {layer.name!r} ({kind}) has no tf_keras equivalent for QAT/pruning; "
                "the bridge maps standard Keras layers and kerascls' ImagePreprocessing, "
                "SqueezeExcite, StochasticDepth and AdaptiveAveragePooling2D")
        return self._standard(layer, x)

    def _standard(self, layer, x):
        kind = type(layer).__name__
        cfg = layer.get_config()
        act = cfg.get("activation")
        if kind == "Activation":
            return self.activation(act, layer.name, x)
        split = act is not None and kind != "Activation" and act not in INLINE_ACTIVATIONS
        if split:
            cfg["activation"] = "linear"
        y = self._copy(layer, getattr(self.tk.layers, kind), cfg, x)
        return self.activation(act, f"{layer.name}_act", y) if split else y

    def _copy(self, layer, cls, cfg: dict, x):
        """Instantiate ``cls`` from the usable part of ``cfg``, call it, copy the weights."""
        import inspect
        allowed = set(inspect.signature(cls.__init__).parameters) | {"name", "trainable"}
        kwargs = {k: v for k, v in cfg.items() if k in allowed
                  and not k.endswith(("_initializer", "_regularizer", "_constraint"))}
        new = cls(**kwargs)
        y = new(x)
        if layer.weights:
            new.set_weights(layer.get_weights())
        return y

    def activation(self, name: Any, layer_name: str, x: Any) -> Any:
        """A tfmot-friendly activation layer (or ``x`` for linear)."""
        if not isinstance(name, str):
            raise BridgeError(f"layer {layer_name!r}: activation {name!r} is not a named one")
        name = {"silu": "swish", "hard_silu": "hard_swish"}.get(name, name)
        if name == "linear":
            return x
        if name == "relu6":
            return self.tk.layers.ReLU(6.0, name=layer_name)(x)
        if name in ("hard_swish", "hard_sigmoid"):
            cls = self.extra["HardSwish" if name == "hard_swish" else "HardSigmoid"]
            new = cls(name=layer_name)
            self.custom.append(new)
            return new(x)
        if name in ("relu", "softmax", "sigmoid", "tanh", "swish", "gelu"):
            return self.tk.layers.Activation(name, name=layer_name)(x)
        raise BridgeError(f"layer {layer_name!r}: activation {name!r} is not supported by tfmot")

    def _ImagePreprocessing(self, layer, x):
        new = self.tk.layers.Rescaling(list(layer._scale), list(layer._offset),
                                       name=layer.name)
        self.custom.append(new)
        return new(x)

    def _StochasticDepth(self, layer, x):
        return x  # the identity at inference; fine-tuning does without it

    def _Identity(self, layer, x):
        return x

    def _AdaptiveAveragePooling2D(self, layer, x):
        (h, w), (oh, ow) = x.shape[1:3], layer.output_size
        if (h, w) == (oh, ow):
            return x
        if h % oh == 0 and w % ow == 0:
            return self.tk.layers.AveragePooling2D((h // oh, w // ow), name=layer.name)(x)
        if oh % h == 0 and ow % w == 0:  # torch's bins copy each input cell
            return self.tk.layers.UpSampling2D((oh // h, ow // w), name=layer.name)(x)
        raise BridgeError(f"layer {layer.name!r} (AdaptiveAveragePooling2D) pools {h}×{w} to "
                          f"{oh}×{ow}, not a whole multiple either way")

    def _SqueezeExcite(self, layer, x):
        """GAP → 1×1 conv → act → 1×1 conv → gate → multiply: all layers tfmot knows."""
        tk, n = self.tk, layer.name
        s = tk.layers.GlobalAveragePooling2D(keepdims=True, name=f"{n}_pool")(x)
        for sub, act in ((layer.reduce, layer.activation), (layer.expand, layer.gate)):
            kernel, bias = sub.get_weights()
            conv = tk.layers.Conv2D(kernel.shape[1], 1, name=f"{n}_{sub.name}")
            s = conv(s)
            conv.set_weights([kernel[None, None], bias])
            s = self.activation(act, f"{n}_{sub.name}_act", s)
        mul = tk.layers.Multiply(name=f"{n}_mul")
        self.custom.append(mul)
        return mul([x, s])


def rebuild(model: Any) -> tuple[Any, list]:
    """(tf_keras model, custom layers needing an output-only QuantizeConfig)."""
    r = Rebuilder()
    return r.build(model), r.custom
