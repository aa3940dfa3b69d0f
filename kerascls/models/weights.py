"""Pretrained weights: Keras' official ImageNet files and any .keras / .weights.h5 file.

``create_model(name, ..., weights="imagenet")`` fetches the file keras.applications itself
uses — same file name, hash and cache (``$KERAS_HOME/models``, ``~/.keras/models`` by
default) — so a file already cached or placed there works offline. Those files are
legacy HDF5 (``layer_names`` + per-layer groups, loaded by topology), and some twins nest
``Sequential`` blocks or keep Keras' ``LayerNormalization``; instead of a second parser,
the keras.applications twin is built with ``weights=None`` at a tiny size, loads the file
with Keras' own loader, and its variables are copied into ours in model order
(``transfer``). Our families build their layers in the twin's order, so the copy is
one-to-one; 1×1 Conv2D ↔ Dense weights (SE, MobileNetV3's head) are reshaped.
A different head (K ≠ 1000 classes) or a ``notop`` file loads the backbone only.

A keras.applications file given by path (``weights=PATH``) is recognised by its file name
(``resnet50_weights_tf_dim_ordering_tf_kernels.h5``, ``efficientnetb0_notop.h5``,
``convnext_tiny.h5``, ``weights_mobilenet_v3_small_224_1.0_float.h5`` …, also with a
``.weights.h5`` ending) or by its layer layout (the twin's layers, no ``head``); it then
gets exactly the ``weights="imagenet"`` input handling (``expected_input``): the twin's
statistics in ``ImagePreprocessing`` and, for caffe-trained ResNets, the stem conv's
input channels reversed so the model takes RGB. With ``preprocess=False`` the model is
the twin itself (fed ``preprocess_input`` output, BGR for ResNet): no stem flip.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import warnings
import zipfile
from dataclasses import dataclass

import keras

from kerascls.errors import UserError
from kerascls.models import _keras_private

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
CAFFE = ((123.68 / 255, 116.779 / 255, 103.939 / 255), (1 / 255,) * 3)  # BGR, no std
INCEPTION = ((0.5,) * 3, (0.5,) * 3)  # [-1, 1]
PREPROCESSING = (keras.layers.Normalization, keras.layers.Rescaling)


class WeightsNotFoundError(FileNotFoundError):
    """An ImageNet weights file is neither cached nor downloadable (offline)."""


@dataclass(frozen=True)
class Twin:
    """A keras.applications architecture ours is layer-compatible with, and its files."""

    app: str                    # keras.applications constructor
    module: str                 # keras.applications module (``_keras_private``)
    key: str                    # its WEIGHTS_HASHES key
    files: tuple[str, str]      # (with top, notop) file names
    stats: tuple = IMAGENET     # (mean, std) on the 0–1 scale the weights expect
    bgr: bool = False           # weights expect BGR input (caffe): flip the stem conv
    top: tuple[str, ...] = ()   # our layers, besides ``head``, that only top files hold

    def origin(self, fname: str) -> str:
        """The address keras.applications downloads ``fname`` from."""
        return _keras_private.weights_base_url(self.module) + fname

    def file_hash(self, include_top: bool) -> str:
        """Keras' published hash of the file with (or without) its top."""
        return _keras_private.weights_hashes(self.module)[self.key][0 if include_top else 1]


def _resnet(depth: int) -> Twin:
    stem = f"resnet{depth}_weights_tf_dim_ordering_tf_kernels"
    return Twin(f"ResNet{depth}", "resnet", f"resnet{depth}", (f"{stem}.h5", f"{stem}_notop.h5"),
                CAFFE, bgr=True)


def _convnext(size: str) -> Twin:
    title = "XLarge" if size == "xlarge" else size.capitalize()
    return Twin(f"ConvNeXt{title}", "convnext",
                f"convnext_{size}", (f"convnext_{size}.h5", f"convnext_{size}_notop.h5"))


def _efficientnet(b: int) -> Twin:
    return Twin(f"EfficientNetB{b}", "efficientnet", f"b{b}",
                (f"efficientnetb{b}.h5", f"efficientnetb{b}_notop.h5"))


# EfficientNetV2 S/M/L rescale to x/128 − 1 in-model: mean = std = 128/255 on the 0–1 scale
V2_SML = ((128 / 255,) * 3, (128 / 255,) * 3)


def _efficientnetv2(size: str) -> Twin:
    """keras.applications' EfficientNetV2 files: ``efficientnetv2-b0.h5``, ``-s_notop.h5`` …"""
    stem = f"efficientnetv2-{size}"
    return Twin(f"EfficientNetV2{size.upper()}", "efficientnet_v2",
                size if size.startswith("b") else f"-{size}",
                (f"{stem}.h5", f"{stem}_notop.h5"), IMAGENET if size.startswith("b") else V2_SML)


def _mobilenetv3(size: str) -> Twin:
    key = f"{size}_224_1.0_float"
    return Twin(f"MobileNetV3{size.capitalize()}", "mobilenet_v3", key,
                (f"weights_mobilenet_v3_{key}.h5", f"weights_mobilenet_v3_{key}_no_top_v2.h5"),
                INCEPTION, top=("conv_2",))


TWINS: dict[str, Twin] = {
    **{f"resnet{d}": _resnet(d) for d in (50, 101, 152)},
    **{f"convnext_{s}": _convnext(s) for s in ("tiny", "small", "base", "large", "xlarge")},
    **{f"efficientnet_b{b}": _efficientnet(b) for b in range(8)},
    **{f"efficientnetv2_{s}": _efficientnetv2(s) for s in ("b0", "b1", "b2", "b3", "s", "m", "l")},
    **{f"mobilenetv3_{s}": _mobilenetv3(s) for s in ("small", "large")},
}


def imagenet_stats(name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) our ``ImagePreprocessing`` needs for ``name``'s ImageNet weights."""
    return _twin(name).stats


def _twin(name: str) -> Twin:
    if name not in TWINS:
        raise UserError(f"no ImageNet weights for {name!r}; keras.applications ships them "
                        f"for {', '.join(sorted(TWINS))} (or pass weights=PATH)")
    return TWINS[name]


def keras_home() -> str:
    """The cache root keras.applications uses (``$KERAS_HOME`` or ``~/.keras``)."""
    root = os.path.expanduser(_keras_private.keras_home())
    return root if os.access(root, os.W_OK) else os.path.join("/tmp", ".keras")


def fetch(name: str, include_top: bool) -> tuple[str, bool]:
    """(path, include_top) of a cached or downloaded ImageNet file for ``name``.

    Prefers the file matching the head asked for, but takes the other one if only that
    is cached. A cached file whose hash differs from Keras' warns and is used (it was
    placed there on purpose); never deleted, unlike ``get_file`` on a failed re-download.
    """
    twin = _twin(name)
    cache = os.path.join(keras_home(), "models")
    for top in (include_top, not include_top):
        path = os.path.join(cache, twin.files[0 if top else 1])
        if os.path.exists(path):
            if not file_matches(path, twin.file_hash(top)):
                warnings.warn(f"{path} does not match Keras' published hash; using it as is",
                              stacklevel=2)
            return path, top
    fname = twin.files[0 if include_top else 1]
    try:
        return keras.utils.get_file(fname, twin.origin(fname), cache_subdir="models",
                                    file_hash=twin.file_hash(include_top)), include_top
    except Exception as exc:  # offline: urllib errors arrive wrapped in a bare Exception
        raise WeightsNotFoundError(
            f"ImageNet weights for {name!r} are not cached and could not be downloaded "
            f"({exc}). Place {fname} (from {twin.origin(fname)}) in {cache}/ "
            f"(or set KERAS_HOME) and retry.") from exc


def file_matches(path: str, expected: str) -> bool:
    """Whether ``path`` has Keras' published hash (sha256 if 64 hex digits, else md5)."""
    hasher = hashlib.sha256() if len(expected) == 64 else hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            hasher.update(chunk)
    return hasher.hexdigest() == expected


def build_twin(name: str, include_top: bool, channels: int = 3) -> keras.Model:
    """The keras.applications twin with ``weights=None`` at a tiny size (weights are size-free)."""
    app = getattr(keras.applications, _twin(name).app)
    return app(weights=None, include_top=include_top, input_shape=(32, 32, channels))


def _leaves(layer) -> list:
    """Layers holding weights, nested models expanded, preprocessing layers skipped."""
    if isinstance(layer, keras.Model):
        return [leaf for sub in layer.layers for leaf in _leaves(sub)]
    if isinstance(layer, PREPROCESSING) or not layer.weights:
        return []
    return [layer]


def _fits(src, dst) -> bool:
    """Same values up to size-1 axes (a 1×1 Conv2D kernel is a Dense kernel)."""
    return [d for d in src.shape if d != 1] == [d for d in dst.shape if d != 1] and \
        math.prod(src.shape) == math.prod(dst.shape)


def transfer(source: keras.Model, target: keras.Model, top: tuple[str, ...] = ()) -> None:
    """Copy ``source``'s variables into ``target`` in model order.

    Every body variable must fit its partner; ``head`` and the ``top`` layers take the
    source's trailing (classifier) variables one by one where they fit and keep fresh ones
    otherwise (K-class heads, notop files). Raises ValueError naming the first misfit.
    """
    top = {"head", *top}
    src = [w for layer in _leaves(source) for w in layer.weights]
    body = [w for layer in _leaves(target) if layer.name not in top for w in layer.weights]
    tail = [w for layer in _leaves(target) if layer.name in top for w in layer.weights]
    if not len(body) <= len(src) <= len(body) + len(tail):
        raise UserError(f"{source.name} has {len(src)} weights, {target.name} needs "
                        f"{len(body)} (+{len(tail)} in its head)")
    for s, d in zip(src, body):
        if not _fits(s, d):
            raise UserError(f"{source.name}: {s.path} {tuple(s.shape)} does not fit "
                            f"{d.path} {tuple(d.shape)}")
        d.assign(keras.ops.reshape(s.value, d.shape))
    for s, d in zip(src[len(body):], tail):
        if _fits(s, d):  # a K-class head keeps its fresh kernel and bias
            d.assign(keras.ops.reshape(s.value, d.shape))


def _flip_stem(model: keras.Model) -> None:
    """Reverse the first conv's input channels: BGR-trained weights then take RGB."""
    conv = next(layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D))
    conv.kernel.assign(keras.ops.flip(conv.kernel.value, axis=2))


def _wants_top(model: keras.Model) -> bool:
    head = model.get_layer("head")
    return head.units == 1000


def load_imagenet(model: keras.Model, name: str) -> keras.Model:
    """Load keras.applications' ImageNet weights for ``name`` into ``model``."""
    twin = _twin(name)
    path, include_top = fetch(name, _wants_top(model))
    source = build_twin(name, include_top, model.input_shape[-1])
    source.load_weights(path)
    transfer(source, model, twin.top)
    return model


@dataclass(frozen=True)
class Expected:
    """The input a weights file was trained on: statistics (0–1 scale) and channel order."""

    stats: tuple[tuple[float, ...], tuple[float, ...]]
    bgr: bool = False


def expected_input(name: str, weights: str | os.PathLike | None) -> Expected | None:
    """What ``weights`` expect as input, or None for our own files (and no weights).

    ``"imagenet"`` and any keras.applications twin file (by name or layer layout) expect
    the twin's preprocessing; ``create_model`` builds it in and flips a BGR stem.
    """
    if weights is None:
        return None
    if weights == "imagenet":
        twin = _twin(name)
        return Expected(twin.stats, twin.bgr)
    path = os.fspath(weights)
    if name not in TWINS or not os.path.isfile(path) or not is_twin_file(name, path):
        return None  # ours, or not a file: ``load_path`` says what is wrong with it
    twin = TWINS[name]
    stats = _file_stats(path) if twin.module == "efficientnet" else None
    return Expected(stats or twin.stats, twin.bgr)


def canonical_names(name: str) -> set[str]:
    """File names keras.applications uses for ``name`` (and their ``.weights.h5`` twins)."""
    files = TWINS[name].files if name in TWINS else ()
    return {f for file in files for f in (file, file[:-3] + ".weights.h5")}


def is_twin_file(name: str, path: str) -> bool:
    """Whether ``path`` holds keras.applications weights (not a kerascls model's)."""
    if os.path.basename(path) in canonical_names(name):
        return True
    try:
        if path.endswith(".keras"):
            with zipfile.ZipFile(path) as z:
                config = json.loads(z.read("config.json"))
            return not _has_layer(config, "head")
        if _is_legacy_h5(path):
            return "head" not in _legacy_layer_names(path)
        return _h5_keys(path) in _twin_keys(name)
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return False  # unreadable as either: loading reports it


def _has_layer(config: dict, layer: str) -> bool:
    return any(item.get("config", {}).get("name") == layer
               for item in config.get("config", {}).get("layers", []))


def _legacy_layer_names(path: str) -> set[str]:
    import h5py
    with h5py.File(path, "r") as f:
        group = f.get("model_weights", f)
        return {n.decode() if isinstance(n, bytes) else str(n)
                for n in group.attrs.get("layer_names", [])}


def _h5_keys(path: str) -> frozenset[str]:
    """The ``layers/<class>_<n>`` entries of a Keras 3 ``.weights.h5``."""
    import h5py
    with h5py.File(path, "r") as f:
        return frozenset(f"layers/{k}" for k in f.get("layers", {}))


def snake_case(name: str) -> str:
    """Keras' class name → file key rule: ``BatchNormalization`` → ``batch_normalization``."""
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", re.sub(r"\W+", "", name))
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


def file_keys(model: keras.Model) -> list[tuple[keras.layers.Layer, str]]:
    """(layer, ``layers/<class>_<n>``) as Keras 3 writes ``.weights.h5``: per class, in order."""
    seen: dict[str, int] = {}
    keys = []
    for layer in model.layers:
        base = snake_case(type(layer).__name__)
        n = seen.get(base, -1) + 1
        seen[base] = n
        keys.append((layer, f"layers/{base}" + (f"_{n}" if n else "")))
    return keys


def load_keras_applications_weights(model: keras.Model, path: str) -> keras.Model:
    """Load a ``.weights.h5`` saved from ``keras.applications.ResNet{50,101,152}``.

    Keras 3 keys weight-file entries by layer class and position (``layers/conv2d_7``), not
    by name; this family builds its layers in keras.applications' order, so every body
    layer finds its entry (our ``ImagePreprocessing``/``Activation`` layers hold no
    weights). Body layers must match exactly (a ResNet50 file in a ResNet101 raises).
    The ``head`` takes their ``predictions`` Dense when the file has one of the same
    shape (1000 ImageNet classes) and otherwise keeps its fresh weights, so a K-class
    fine-tuning model and ``include_top=False`` files load too. Build with
    ``preprocess=False`` to feed caffe-preprocessed tensors as keras.applications does.
    """
    import h5py  # a Keras dependency; only this loader needs it

    with h5py.File(path, "r") as f:
        for layer, key in file_keys(model):
            if not layer.weights:
                continue
            group = f.get(f"{key}/vars")
            values = [group[str(i)][()] for i in range(len(group))] if group else []
            shapes = [tuple(w.shape) for w in layer.weights]
            if [v.shape for v in values] != shapes:
                if layer.name == "head":
                    continue
                raise UserError(f"{path}: {key} holds {[v.shape for v in values]}, "
                                f"layer {layer.name!r} needs {shapes}")
            layer.load_own_variables({str(i): v for i, v in enumerate(values)})
    return model


def _twin_keys(name: str) -> list[frozenset[str]]:
    """The Keras 3 weight-file keys of the twin with and without its top."""
    out = []
    for top in (True, False):
        twin = build_twin(name, top)
        out.append(frozenset(key for _, key in file_keys(twin)))
        del twin
    return out


def _file_stats(path: str) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """EfficientNet: (mean, std) from the twin's input ``Normalization`` in the file.

    Keras' official files store the ImageNet std where the variance belongs
    (tensorflow/tensorflow#49930; ``weights="imagenet"`` corrects it with an extra
    rescaling): those mean ImageNet statistics. Any other values are what the twin
    computes from this file: ``(x/255 − mean) / √variance``.
    """
    values = _normalization_values(path)
    if values is None:
        return None
    mean, var = (tuple(float(v) for v in a.reshape(-1)) for a in values)
    if all(math.isclose(a, b, abs_tol=1e-4) for a, b in zip(mean + var, IMAGENET[0] + IMAGENET[1])):
        return IMAGENET
    return mean, tuple(max(math.sqrt(max(v, 0.0)), 1e-7) for v in var)


def _normalization_values(path: str):
    """(mean, variance) arrays of the layer ``normalization`` in an h5 / .keras file."""
    import h5py
    if path.endswith(".keras"):
        with zipfile.ZipFile(path) as z:
            data = io.BytesIO(z.read("model.weights.h5"))
        with h5py.File(data, "r") as f:
            return _keras3_normalization(f)
    with h5py.File(path, "r") as f:
        if "layer_names" in f.attrs or "model_weights" in f:
            root = f.get("model_weights", f)
            name = next((n for n in root if re.fullmatch(r"normalization(_\d+)?", n)), None)
            if name is None:  # a twin built after others in one process: normalization_1
                return None
            group = root[name]
            names = [n.decode() if isinstance(n, bytes) else str(n)
                     for n in group.attrs["weight_names"]]
            by = {n.split("/")[-1].split(":")[0]: group[n][()] for n in names}
            return by["mean"], by["variance"]
        return _keras3_normalization(f)


def _keras3_normalization(f):
    group = f.get("layers/normalization/vars")
    return (group["0"][()], group["1"][()]) if group is not None and len(group) >= 2 else None


def _is_legacy_h5(path: str) -> bool:
    import h5py
    with h5py.File(path, "r") as f:
        return "layer_names" in f.attrs or "model_weights" in f


def _own_format(model: keras.Model, path: str) -> bool:
    """A Keras 3 weights file of our own layout (every weighted layer's key is there)."""
    import h5py
    with h5py.File(path, "r") as f:
        return all(key in f for layer, key in file_keys(model)
                   if layer.weights and layer.name != "head")


def _from_twin_file(model: keras.Model, name: str, path: str) -> None:
    """A file saved from the keras.applications twin (with or without its top)."""
    errors = []
    for include_top in (True, False):
        source = build_twin(name, include_top, model.input_shape[-1])
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # Keras warns (not raises) on some misfits
                source.load_weights(path)
        except Exception as exc:  # noqa: BLE001 — try the other layout, report both
            errors.append(f"include_top={include_top}: {exc}")
            continue
        transfer(source, model, _twin(name).top)
        return
    raise UserError(f"{path} fits neither {name} nor keras.applications."
                    f"{_twin(name).app}:\n" + "\n".join(errors))


KERAS_ARCHIVE = ("config.json", "model.weights.h5")


def load_keras_file(path: str) -> keras.Model:
    """``keras.saving.load_model`` (no compile, safe mode) after checking the archive.

    Keras answers a file that is not a zip with "File not found" and a zip without
    ``config.json`` with a bare KeyError; this says what the file lacks instead.
    """
    if not zipfile.is_zipfile(path):
        raise UserError(f"{path} is not a Keras model file: a .keras file is a zip archive "
                        f"holding {' and '.join(KERAS_ARCHIVE)}")
    with zipfile.ZipFile(path) as z:
        missing = [n for n in KERAS_ARCHIVE if n not in z.namelist()]
    if missing:
        raise UserError(f"{path} is not a Keras model file: the archive lacks "
                        f"{', '.join(missing)}")
    return keras.saving.load_model(path, compile=False, safe_mode=True)


def load_path(model: keras.Model, name: str, path: str) -> keras.Model:
    """Load a .keras, .weights.h5 (ours or the twin's) or legacy .h5 file into ``model``."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"weights file {path} does not exist")
    if path.endswith(".keras"):
        source = load_keras_file(path)
        transfer(source, model, TWINS[name].top if name in TWINS else ())
    elif not _is_legacy_h5(path) and _own_format(model, path):
        try:  # the same model (nested layers such as SqueezeExcite included)
            model.load_weights(path)
        except ValueError:  # class/position keys, head may differ
            load_keras_applications_weights(model, path)
    else:
        _from_twin_file(model, name, path)
    return model


def load_weights(model: keras.Model, name: str, weights: str | os.PathLike,
                 flip_stem: bool = False) -> keras.Model:
    """``weights="imagenet"`` or a path, for ``create_model``.

    ``flip_stem``: the weights expect BGR and the model takes RGB (``expected_input``).
    """
    if weights == "imagenet":
        load_imagenet(model, name)
    else:
        load_path(model, name, weights)
    if flip_stem:
        _flip_stem(model)
    return model
