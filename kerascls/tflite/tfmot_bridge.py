"""QAT and pruning with tensorflow-model-optimization, isolated in a subprocess.

tfmot 0.8 accepts only tf_keras (Keras 2) models, and importing it sets
``TF_USE_LEGACY_KERAS=1`` for the whole process (tensorflow/model-optimization#1119,
#1270). So the rest of kerascls never imports it: :func:`finetune_tflite` runs
``python -m kerascls.tflite.tfmot_bridge`` which

1. loads the Keras 3 model and rebuilds it layer by layer as a tf_keras model (standard
   layers by config; our custom layers as tf_keras equivalents), copying the weights;
2. wraps it with ``quantize_model`` (QAT) or ``prune_low_magnitude`` (Conv2D/Dense);
3. fine-tunes on the run's training images, strips the pruning wrappers;
4. converts to TFLite int8 with uint8 input — the settings of ``convert.run_converter``.

Families covered: every layer of lenet, small_cnn, alexnet (without LRN), vgg (without LRN),
resnet and se-resnet, mobilenetv3, efficientnet and efficientnet_lite maps; any other
custom layer stops the bridge with an error naming it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

MODES = ("qat", "prune")


class BridgeError(RuntimeError):
    """QAT or pruning could not run; the message names the reason (e.g. the layer)."""


# --------------------------------------------------------------------------------------
# Parent side: run the bridge in a fresh interpreter.
# --------------------------------------------------------------------------------------

def finetune_tflite(model_path: str | Path, mode: str, *, epochs: int, data: str,
                    sparsity: float = 0.0, samples: int = 5000, calibration_samples: int = 500,
                    batch_size: int = 64, learning_rate: float | None = None,
                    seed: int = 0, timeout: float | None = None) -> tuple[bytes, dict]:
    """Fine-tune (QAT or pruning) in a subprocess; returns int8 .tflite bytes and facts.

    The facts (``mode``, ``epochs``, measured ``sparsity`` …) go into report.json.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    with tempfile.TemporaryDirectory(prefix="kerascls-tfmot-") as tmp:
        cmd = [sys.executable, "-m", "kerascls.tflite.tfmot_bridge", "--model", str(model_path),
               "--mode", mode, "--epochs", str(epochs), "--data", data,
               "--sparsity", str(sparsity), "--samples", str(samples),
               "--calibration_samples", str(calibration_samples),
               "--batch_size", str(batch_size), "--seed", str(seed), "--out", tmp]
        if learning_rate is not None:
            cmd += ["--learning_rate", str(learning_rate)]
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
        if proc.returncode:
            lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("tfmot_bridge:")]
            tail = lines[-1] if lines else "\n".join(proc.stderr.splitlines()[-15:])
            raise BridgeError(tail.removeprefix("tfmot_bridge: error: "))
        out = Path(tmp)
        return (out / "model.tflite").read_bytes(), json.loads((out / "bridge.json").read_text())


# --------------------------------------------------------------------------------------
# Child side: Keras 3 → tf_keras.
# --------------------------------------------------------------------------------------

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


def _output_quantize_config():
    """A QuantizeConfig for weightless layers tfmot does not know: quantize the output only.

    Our preprocessing, hard-sigmoid, hard-swish and SE's multiply get it, so the
    converter sees a fake-quant range after each and nothing stays float.
    """
    import tensorflow_model_optimization as tfmot

    class OutputQuantizeConfig(tfmot.quantization.keras.QuantizeConfig):
        def get_weights_and_quantizers(self, layer):
            return []

        def get_activations_and_quantizers(self, layer):
            return []

        def set_quantize_weights(self, layer, quantize_weights):
            pass

        def set_quantize_activations(self, layer, quantize_activations):
            pass

        def get_output_quantizers(self, layer):
            return [tfmot.quantization.keras.quantizers.MovingAverageQuantizer(
                num_bits=8, per_axis=False, symmetric=False, narrow_range=False)]

        def get_config(self):
            return {}

    return OutputQuantizeConfig


# Keras 3 layers rebuilt from their own config (weights copied as they are).
STANDARD = {"Conv2D", "DepthwiseConv2D", "Dense", "BatchNormalization", "ReLU", "Softmax",
            "MaxPooling2D", "AveragePooling2D", "GlobalAveragePooling2D",
            "GlobalMaxPooling2D", "Flatten", "Reshape", "Dropout", "ZeroPadding2D", "Add",
            "Multiply", "Concatenate", "Activation", "Identity"}
# activations tfmot quantizes inline in Conv2D/Dense; any other becomes its own layer
INLINE_ACTIVATIONS = {"linear", "relu"}


class Rebuilder:
    """Keras 3 functional model → tf_keras functional model with the same weights.

    ``custom`` lists the tf_keras layers that need :func:`_output_quantize_config`
    when quantized (tfmot's registry does not know them).
    """

    def __init__(self):
        import tf_keras as tk
        self.tk = tk
        self.extra = _tf_keras_layers()
        self.custom: list = []

    def build(self, model):
        tensors = {id(t): self.tk.Input(shape=t.shape[1:], name=t.name or "image")
                   for t in model.inputs}
        inputs = [tensors[id(t)] for t in model.inputs]
        for layer in model.layers:
            if type(layer).__name__ == "InputLayer":
                continue
            node = layer._inbound_nodes[0]
            args = [tensors[id(t)] for t in node.input_tensors]
            out = self.layer(layer, args if len(args) > 1 else args[0])
            tensors[id(node.output_tensors[0])] = out
        outputs = [tensors[id(t)] for t in model.outputs]
        return self.tk.Model(inputs, outputs, name=model.name)

    def layer(self, layer, x):
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

    def activation(self, name, layer_name: str, x):
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


def rebuild(model):
    """(tf_keras model, custom layers needing an output-only QuantizeConfig)."""
    r = Rebuilder()
    return r.build(model), r.custom


# --------------------------------------------------------------------------------------
# Child side: QAT, pruning, fine-tuning, conversion.
# --------------------------------------------------------------------------------------

def quantize(tk_model, custom: list):
    """``quantize_model`` with our weightless custom layers annotated output-only."""
    import tensorflow_model_optimization as tfmot
    q = tfmot.quantization.keras
    config_cls = _output_quantize_config()
    names = {layer.name for layer in custom}

    def annotate(layer):
        if layer.name in names:
            return q.quantize_annotate_layer(layer, config_cls())
        return q.quantize_annotate_layer(layer)

    annotated = _clone(tk_model, annotate)
    scope = {"OutputQuantizeConfig": config_cls, **_tf_keras_layers_by_obj(custom)}
    with q.quantize_scope(scope):
        return q.quantize_apply(annotated)


def _tf_keras_layers_by_obj(layers: list) -> dict:
    return {type(layer).__name__: type(layer) for layer in layers}


def _clone(tk_model, fn):
    import tf_keras as tk
    return tk.models.clone_model(tk_model, clone_function=fn)


def prune(tk_model, sparsity: float, total_steps: int):
    """Wrap every Conv2D and Dense with magnitude pruning, ramping to ``sparsity``."""
    import tensorflow_model_optimization as tfmot
    import tf_keras as tk
    s = tfmot.sparsity.keras
    schedule = s.PolynomialDecay(0.0, sparsity, begin_step=0,
                                 end_step=max(1, int(total_steps * 0.7)),
                                 frequency=max(1, total_steps // 20))

    def wrap(layer):
        if isinstance(layer, (tk.layers.Conv2D, tk.layers.Dense)) and not isinstance(
                layer, tk.layers.DepthwiseConv2D):
            return s.prune_low_magnitude(layer, pruning_schedule=schedule)
        return layer

    return _clone(tk_model, wrap)


def measured_sparsity(tk_model) -> dict:
    """Share of exact zeros in the pruned kernels (Conv2D/Dense) and in all weights."""
    import tf_keras as tk
    pruned = [layer.kernel.numpy() for layer in tk_model.layers
              if isinstance(layer, (tk.layers.Conv2D, tk.layers.Dense))
              and not isinstance(layer, tk.layers.DepthwiseConv2D)]
    allw = [w.numpy() for w in tk_model.trainable_weights]
    zeros = sum(int((k == 0).sum()) for k in pruned)
    count = sum(k.size for k in pruned)
    return {"kernel_sparsity": zeros / max(count, 1), "pruned_kernel_params": count,
            "all_weights_sparsity": sum(int((w == 0).sum()) for w in allw)
            / max(sum(w.size for w in allw), 1)}


def _loss(task: str, logits: bool):
    import tf_keras as tk
    if task == "multiclass":
        return tk.losses.SparseCategoricalCrossentropy(from_logits=logits)
    return tk.losses.BinaryCrossentropy(from_logits=logits)


def finetune(model, images: np.ndarray, labels: np.ndarray, *, epochs: int, task: str,
             logits: bool, batch_size: int, learning_rate: float, callbacks=()) -> list[float]:
    """A few epochs of Adam at a small learning rate; returns the loss per epoch."""
    import tf_keras as tk
    model.compile(tk.optimizers.Adam(learning_rate), _loss(task, logits), metrics=["accuracy"])
    if task != "multiclass":
        labels = labels.astype(np.float32)
    hist = model.fit(images, labels, batch_size=batch_size, epochs=epochs, shuffle=True,
                     verbose=0, callbacks=list(callbacks))
    return [float(v) for v in hist.history["loss"]]


def to_tflite(tk_model, calibration: np.ndarray) -> bytes:
    """int8 full-integer, uint8 in/out, batch 1 — ``convert.run_converter``'s settings."""
    import tensorflow as tf

    from kerascls.tflite.convert import run_converter
    shape = (1, *tk_model.input_shape[1:])
    fn = tf.function(lambda x: tk_model(x, training=False))
    concrete = fn.get_concrete_function(tf.TensorSpec(shape, tf.float32, name="image"))
    conv = tf.lite.TFLiteConverter.from_concrete_functions([concrete], tk_model)
    return run_converter(conv, "int8", shape, calibration)


def run(args: argparse.Namespace) -> dict:
    """The child's whole job; writes model.tflite and bridge.json into ``args.out``."""
    import keras

    from kerascls.tflite.export import load_run, sample_images
    loaded = load_run(args.model)
    k3 = loaded.model
    shape = tuple(int(d) for d in k3.input_shape[1:])
    cfg_args = loaded.config.model_args if loaded.config else {}
    task, logits = cfg_args.get("task", "multiclass"), bool(cfg_args.get("logits", False))
    run_dir = loaded.path.parent if loaded.config else None
    images, labels = sample_images(args.data, "train", args.samples, shape, args.seed, run_dir)
    tk_model, custom = rebuild(k3)
    keras.backend.clear_session()
    np.random.seed(args.seed)
    import tensorflow as tf
    tf.random.set_seed(args.seed)
    steps = args.epochs * int(np.ceil(len(images) / args.batch_size))
    info: dict = {"mode": args.mode, "epochs": args.epochs, "finetune_images": int(len(images))}
    if args.mode == "qat":
        model = quantize(tk_model, custom)
        lr = args.learning_rate or 1e-4
        info["loss"] = finetune(model, images, labels, epochs=args.epochs, task=task,
                                logits=logits, batch_size=args.batch_size, learning_rate=lr)
    else:
        import tensorflow_model_optimization as tfmot
        model = prune(tk_model, args.sparsity, steps)
        lr = args.learning_rate or 5e-4
        info["loss"] = finetune(model, images, labels, epochs=args.epochs, task=task,
                                logits=logits, batch_size=args.batch_size, learning_rate=lr,
                                callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
        model = tfmot.sparsity.keras.strip_pruning(model)
        info.update(target_sparsity=args.sparsity, **measured_sparsity(model))
    info["learning_rate"] = lr
    calib = images[:args.calibration_samples]
    out = Path(args.out)
    (out / "model.tflite").write_bytes(to_tflite(model, calib))
    (out / "bridge.json").write_text(json.dumps(info, indent=2))
    return info


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="tfmot_bridge", description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="run directory or .keras file")
    p.add_argument("--mode", choices=MODES, required=True)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--data", required=True)
    p.add_argument("--sparsity", type=float, default=0.5)
    p.add_argument("--samples", type=int, default=5000)
    p.add_argument("--calibration_samples", type=int, default=500)
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--learning_rate", type=float, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="folder for model.tflite and bridge.json")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    try:
        run(args)
    except (BridgeError, ValueError, FileNotFoundError) as e:
        print(f"tfmot_bridge: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
