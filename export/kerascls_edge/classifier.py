"""`Classifier`: a LiteRT interpreter plus the bundle contract, with no TensorFlow anywhere."""

from __future__ import annotations

import os
import threading
from typing import Optional, Sequence, Union

import numpy as np

from .bundle import EdgeError, ModelSpec, load_spec
from .decode import Box, Decoded, Preprocess, Source, decode

try:  # the runtime's only inference dependency
    from ai_edge_litert.interpreter import Interpreter
except ImportError:  # pragma: no cover - exercised only on broken installs
    Interpreter = None


def softmax(x: np.ndarray) -> np.ndarray:
    """Numerically stable softmax over the last axis."""
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def top_k(probs: np.ndarray, k: int) -> list[tuple[int, float]]:
    """Indices and values of the k largest entries, highest first (stable for ties)."""
    n = probs.shape[-1]
    k = max(1, min(int(k), n))
    if k < n:  # only the entries at or above the k-th largest: O(n), not a full sort
        cut = np.partition(probs, n - k)[n - k]
        keep = np.flatnonzero(probs >= cut)
        idx = keep[np.argsort(-probs[keep], kind="stable")[:k]]
    else:
        idx = np.argsort(-probs, kind="stable")
    return [(int(i), float(probs[i])) for i in idx]


_top_k = top_k  # `classify` has a parameter of the same name


class Classifier:
    """Runs a kerascls bundle (or a bare .tflite + labels) on images or pre-decoded pixels.

    Args:
      model_path: a bundle directory (model.tflite, labels.txt, model.json) or a .tflite file.
      labels: a list of class names or a labels file; default: the bundle's / a labels file
        beside the model.
      threads: interpreter threads; default: all CPU cores.
    """

    def __init__(self, model_path: Union[str, os.PathLike],
                 labels: Union[None, str, os.PathLike, Sequence[str]] = None,
                 threads: Optional[int] = None) -> None:
        if Interpreter is None:
            raise EdgeError("ai-edge-litert is not installed (pip install ai-edge-litert)")
        self._source = (model_path, labels)  # what `replica` loads again
        self.spec: ModelSpec = load_spec(model_path, labels)
        self.threads = int(threads) if threads else (os.cpu_count() or 1)
        try:
            self._interp = Interpreter(model_path=str(self.spec.model_path),
                                       num_threads=self.threads)
            self._interp.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            raise EdgeError(f"cannot load {self.spec.model_path}: {e}") from None
        self._lock = threading.Lock()
        self._inp = self._interp.get_input_details()[0]
        self._out = self._interp.get_output_details()[0]
        self._check_input()
        self.num_outputs = int(np.prod(self._out["shape"][1:]))
        self.labels = self._check_labels()
        self.preprocess = Preprocess(self.spec.height, self.spec.width, self.spec.channels,
                                     self.spec.resize, self.spec.interpolation)

    def replica(self) -> "Classifier":
        """Another one-thread interpreter of the same model and labels, for another thread.

        Interpreters are not shared between threads (``predict_array`` locks); a decode
        worker that classifies what it decoded needs its own.
        """
        return Classifier(*self._source, threads=1)

    # -- set-up -------------------------------------------------------------------------------

    def _check_input(self) -> None:
        """Take size/channels/dtype from the interpreter and refuse a model.json that disagrees."""
        shape = [int(v) for v in self._inp["shape"]]
        if len(shape) != 4:
            raise EdgeError(f"expected an NHWC image input, got shape {shape}")
        _, h, w, c = shape
        spec = self.spec
        if spec.from_bundle and (spec.height, spec.width) != (h, w) and spec.height:
            raise EdgeError(f"model.json says {spec.height}x{spec.width} "
                            f"but the model takes {h}x{w}")
        spec.height, spec.width = h, w
        if spec.from_bundle and spec.channels != c:
            raise EdgeError(f"model.json says {spec.channels} channels but the model takes {c}")
        spec.channels = c
        if c not in (1, 3):
            raise EdgeError(f"unsupported input channels: {c}")
        spec.dtype = np.dtype(self._inp["dtype"]).name

    def _check_labels(self) -> list[str]:
        """Labels must match the outputs; a single sigmoid unit may carry two names (binary)."""
        labels = list(self.spec.labels)
        n = self.num_outputs
        if not labels:
            return [f"class_{i}" for i in range(max(n, 2) if n == 1 else n)]
        if n == 1 and len(labels) == 2:
            return labels
        if len(labels) != n:
            raise EdgeError(f"{len(labels)} labels but the model has {n} outputs")
        return labels

    # -- inference ----------------------------------------------------------------------------

    def _quantize_input(self, x: np.ndarray) -> np.ndarray:
        """Raw 0–255 pixels to the input tensor's dtype (uint8 as is, int8 via quant params)."""
        dtype = np.dtype(self._inp["dtype"])
        if dtype == np.uint8:
            return x.astype(np.uint8, copy=False)
        if dtype == np.int8:
            scale, zp = self._inp["quantization"]
            if self.spec.from_bundle and scale > 0:
                # The bundle's real-valued input is the raw pixel: map it through the quant params.
                q = np.round(x.astype(np.float32) / scale + zp)
            else:
                # Third-party int8 model: the usual uint8 -> int8 shift (zero point moved by 128).
                q = x.astype(np.int16) - 128
            return np.clip(q, -128, 127).astype(np.int8)
        lo, hi = self.spec.value_range
        xf = x.astype(np.float32)
        if (lo, hi) != (0, 255):
            xf = xf * ((hi - lo) / 255.0) + lo
        return xf.astype(dtype, copy=False)

    def _read_output(self, raw: np.ndarray) -> np.ndarray:
        """Dequantize, apply the activation the contract says is missing, expand binary outputs."""
        y = raw.astype(np.float32).reshape(raw.shape[0], -1)
        if np.issubdtype(raw.dtype, np.integer):
            scale, zp = self._out["quantization"]
            if scale > 0:
                y = (y - zp) * scale
        if self.spec.activation == "none":
            y = softmax(y) if self.spec.task == "multiclass" and y.shape[1] > 1 else sigmoid(y)
        if y.shape[1] == 1 and len(self.labels) == 2:
            y = np.concatenate([1.0 - y, y], axis=1)
        return y

    def predict_array(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities (N, classes) for a batch of raw NHWC pixels already at the model's size.

        Accepts uint8 (or 0–255 float) pixels; one image HxWxC is taken as a batch of one.
        """
        x = np.asarray(batch)
        if x.ndim == 3:
            x = x[None]
        h, w, c = self.spec.height, self.spec.width, self.spec.channels
        if x.ndim != 4 or tuple(x.shape[1:]) != (h, w, c):
            raise EdgeError(f"expected a batch of shape (N, {h}, {w}, {c}), got {x.shape}")
        q = self._quantize_input(x)
        outs = []
        with self._lock:
            for i in range(q.shape[0]):
                self._interp.set_tensor(self._inp["index"], q[i:i + 1])
                self._interp.invoke()
                outs.append(self._interp.get_tensor(self._out["index"]).copy())
        return self._read_output(np.concatenate(outs, axis=0))

    def decode(self, src: Source, regions: Optional[Sequence[Box]] = None,
               strict: bool = False) -> Decoded:
        """Decode an image (or crops of it) to model-ready pixels; see `decode.decode`."""
        return decode(src, self.preprocess, regions, strict)

    def classify(self, src: Source, top_k: int = 5) -> list[tuple[str, float]]:
        """Top-k (label, probability) for one image path or PIL image, highest first."""
        probs = self.predict_array(self.decode(src).arrays[0])[0]
        return [(self.labels[i], p) for i, p in _top_k(probs, top_k)]
