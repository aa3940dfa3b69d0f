"""The bridge's child: ``python -m kerascls.tflite.tfmot.child SPEC.json`` (under tf_keras).

Reads a :class:`BridgeSpec`, then

1. loads the Keras 3 model and rebuilds it as tf_keras with the same weights (:mod:`.rebuild`);
2. wraps it with ``quantize_model`` (QAT) or ``prune_low_magnitude`` (Conv2D/Dense);
3. fine-tunes on the run's training images, strips the pruning wrappers;
4. converts to TFLite int8 with uint8 input — the settings of ``convert.run_converter``;

and writes ``model.tflite`` and ``bridge.json`` into ``spec.out``. A failure it foresees
(a layer tfmot cannot take, bad data) goes to ``spec.out/error.txt`` as one line, exit 2;
anything else keeps its traceback in the log the parent collects, exit 1.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from kerascls.errors import is_user_error
from kerascls.tflite.tfmot.parent import ERROR_FILE
from kerascls.tflite.tfmot.rebuild import rebuild
from kerascls.tflite.tfmot.spec import BridgeSpec


def _output_quantize_config() -> type:
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


def quantize(tk_model: Any, custom: list) -> Any:
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
    scope = {"OutputQuantizeConfig": config_cls,
             **{type(layer).__name__: type(layer) for layer in custom}}
    with q.quantize_scope(scope):
        return q.quantize_apply(annotated)


def _clone(tk_model: Any, fn: Any) -> Any:
    import tf_keras as tk
    return tk.models.clone_model(tk_model, clone_function=fn)


def prune(tk_model: Any, sparsity: float, total_steps: int) -> Any:
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


def measured_sparsity(tk_model: Any) -> dict:
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


def _loss(task: str, logits: bool) -> Any:
    import tf_keras as tk
    if task == "multiclass":
        return tk.losses.SparseCategoricalCrossentropy(from_logits=logits)
    return tk.losses.BinaryCrossentropy(from_logits=logits)


def finetune(model: Any, images: np.ndarray, labels: np.ndarray, spec: BridgeSpec,
             callbacks: tuple = ()) -> list[float]:
    """``spec.epochs`` of Adam at a small learning rate; returns the loss per epoch."""
    import tf_keras as tk
    model.compile(tk.optimizers.Adam(spec.rate), _loss(spec.task, spec.logits),
                  metrics=["accuracy"])
    if spec.task != "multiclass":
        labels = labels.astype(np.float32)
    hist = model.fit(images, labels, batch_size=spec.batch_size, epochs=spec.epochs,
                     shuffle=True, verbose=0, callbacks=list(callbacks))
    return [float(v) for v in hist.history["loss"]]


def to_tflite(tk_model: Any, calibration: np.ndarray) -> bytes:
    """int8 full-integer, uint8 in/out, batch 1 — ``convert.run_converter``'s settings."""
    import tensorflow as tf

    from kerascls.tflite.convert import run_converter
    shape = (1, *tk_model.input_shape[1:])
    fn = tf.function(lambda x: tk_model(x, training=False))
    concrete = fn.get_concrete_function(tf.TensorSpec(shape, tf.float32, name="image"))
    conv = tf.lite.TFLiteConverter.from_concrete_functions([concrete], tk_model)
    return run_converter(conv, "int8", shape, calibration)


def load_twin(spec: BridgeSpec) -> tuple[Any, list, np.ndarray, np.ndarray]:
    """The run's tf_keras twin, its custom layers, and ``spec.samples`` training images."""
    import keras

    from kerascls.runs import load_run, sample_images
    loaded = load_run(spec.model)
    shape = tuple(int(d) for d in loaded.model.input_shape[1:])
    run_dir = loaded.path.parent if loaded.config else None
    tk_model, custom = rebuild(loaded.model)  # first: an unsupported layer fails fast
    images, labels = sample_images(spec.data, "train", spec.samples, shape, spec.seed, run_dir)
    keras.backend.clear_session()
    return tk_model, custom, images, labels


def run(spec: BridgeSpec) -> dict:
    """The child's whole job; writes model.tflite and bridge.json into ``spec.out``."""
    import tensorflow as tf
    tk_model, custom, images, labels = load_twin(spec)
    np.random.seed(spec.seed)
    tf.random.set_seed(spec.seed)
    info: dict = {"mode": spec.mode, "epochs": spec.epochs, "finetune_images": int(len(images))}
    if spec.mode == "qat":
        model = quantize(tk_model, custom)
        info["loss"] = finetune(model, images, labels, spec)
    else:
        import tensorflow_model_optimization as tfmot
        steps = spec.epochs * int(np.ceil(len(images) / spec.batch_size))
        model = prune(tk_model, spec.sparsity, steps)
        info["loss"] = finetune(model, images, labels, spec,
                                (tfmot.sparsity.keras.UpdatePruningStep(),))
        model = tfmot.sparsity.keras.strip_pruning(model)
        info.update(target_sparsity=spec.sparsity, **measured_sparsity(model))
    info["learning_rate"] = spec.rate
    out = Path(spec.out)
    (out / "model.tflite").write_bytes(to_tflite(model, images[:spec.calibration_samples]))
    (out / "bridge.json").write_text(json.dumps(info, indent=2))
    return info


def main(argv: list[str] | None = None) -> int:
    """Run the spec named on the command line; a foreseen failure → error.txt, exit 2."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m kerascls.tflite.tfmot.child SPEC.json", file=sys.stderr)
        return 2
    spec = BridgeSpec.from_json(Path(argv[0]).read_text())
    try:
        run(spec)
    except Exception as e:
        if not is_user_error(e):
            raise  # a bug: the traceback goes to the log the parent names
        (Path(spec.out) / ERROR_FILE).write_text(str(e).splitlines()[0] if str(e) else repr(e))
        print(f"tfmot child: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
