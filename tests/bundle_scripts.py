"""Python scripts that make tiny kerascls bundles in a subprocess (TensorFlow leaks memory).

Not a test module: test_edge/test_aarch64/test_predict_ray use ``MAKE_BUNDLES``,
test_fidelity/test_data_md_camtrapdp ``MAKE_BUNDLE``.
"""

from __future__ import annotations

import textwrap

# Tiny Keras models whose answer is known: class from the image's mean colour. Preprocessing is
# inside the model (Rescaling), as kerascls exports do.
MAKE_BUNDLES = textwrap.dedent(r'''
    import json, os, sys
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import numpy as np, tensorflow as tf, keras

    out = sys.argv[1]
    rng = np.random.default_rng(0)

    def model(channels, w, b, activation):
        inp = keras.Input((32, 32, channels), batch_size=1)
        x = keras.layers.Rescaling(1 / 255.0)(inp)
        x = keras.layers.GlobalAveragePooling2D()(x)
        d = keras.layers.Dense(len(b), activation=activation)
        y = d(x)
        d.set_weights([np.array(w, np.float32), np.array(b, np.float32)])
        return keras.Model(inp, y)

    def calib(channels):
        for _ in range(64):
            c = rng.integers(0, 256, (1, 1, 1, channels))
            yield [np.clip(c + rng.normal(0, 20, (1, 32, 32, channels)), 0, 255).astype(np.float32)]

    def convert(m, channels, io_type):
        conv = tf.lite.TFLiteConverter.from_keras_model(m)
        if io_type is not None:
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
            conv.representative_dataset = lambda: calib(channels)
            conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            conv.inference_input_type = io_type
            conv.inference_output_type = io_type
        return conv.convert()

    def bundle(name, m, channels, io_type, labels, activation, dtype, resize="stretch"):
        d = os.path.join(out, name)
        os.makedirs(d)
        open(os.path.join(d, "model.tflite"), "wb").write(convert(m, channels, io_type))
        open(os.path.join(d, "labels.txt"), "w").write("\n".join(labels) + "\n")
        meta = {"format": "kerascls-bundle", "format_version": 1, "kerascls_version": "0.1.0",
                "architecture": "tiny_" + name, "task": "multiclass", "class_names": labels,
                "input": {"height": 32, "width": 32, "channels": channels,
                          "channel_order": "RGB", "dtype": dtype, "value_range": [0, 255],
                          "resize": resize, "interpolation": "bilinear"},
                "output": {"activation": activation},
                "quantization": "int8" if io_type is not None else "none",
                "thresholds": {"default": 0.5}, "empty_classes": ["empty"]}
        json.dump(meta, open(os.path.join(d, "model.json"), "w"), indent=1)

    W, B = [[0, 6, -6], [0, 0, 0], [0, -6, 6]], [1.5, 0, 0]
    probe = np.stack([np.full((32, 32, 3), c, np.float32) for c in
                      [(230, 20, 30), (10, 40, 220), (128, 128, 128)]])
    soft = model(3, W, B, "softmax")
    logits = model(3, W, B, None)
    bundle("u8", soft, 3, tf.uint8, ["empty", "red", "blue"], "softmax", "uint8")
    bundle("i8", soft, 3, tf.int8, ["empty", "red", "blue"], "softmax", "int8")
    bundle("f32logits", logits, 3, None, ["empty", "red", "blue"], "none", "float32")
    grey = model(1, [[-8, 8]], [4, -4], "softmax")
    bundle("grey", grey, 1, tf.uint8, ["empty", "bright"], "softmax", "uint8")
    np.save(os.path.join(out, "probe_probs.npy"),
            np.concatenate([soft.predict_on_batch(p[None]) for p in probe]))
''')

MAKE_BUNDLE = textwrap.dedent(r'''
    import json, os, sys
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import numpy as np, tensorflow as tf, keras
    d = sys.argv[1]
    inp = keras.Input((32, 32, 3), batch_size=1)
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Rescaling(1 / 255.0)(inp))
    m = keras.Model(inp, keras.layers.Dense(2, activation="softmax")(x))
    os.makedirs(d)
    open(os.path.join(d, "model.tflite"), "wb").write(
        tf.lite.TFLiteConverter.from_keras_model(m).convert())
    open(os.path.join(d, "labels.txt"), "w").write("empty\nanimal\n")
    json.dump({"format": "kerascls-bundle", "format_version": 1, "task": "multiclass",
               "class_names": ["empty", "animal"],
               "input": {"height": 32, "width": 32, "channels": 3, "channel_order": "RGB",
                         "dtype": "float32", "value_range": [0, 255], "resize": "stretch",
                         "interpolation": "bilinear"},
               "output": {"activation": "softmax"}, "quantization": "none",
               "empty_classes": ["empty"]}, open(os.path.join(d, "model.json"), "w"))
''')
