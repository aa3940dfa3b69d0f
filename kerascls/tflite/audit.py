"""Read a .tflite back with LiteRT: op audit, batch inference, latency."""

from __future__ import annotations

import time

import numpy as np
from ai_edge_litert.interpreter import Interpreter, OpResolverType

_INT_TYPES = {np.int8, np.uint8, np.int16, np.int32, np.int64, np.bool_}


def interpreter(model: bytes | str, threads: int = 2, delegates: bool = True) -> Interpreter:
    """An allocated interpreter from bytes or a path.

    ``delegates=False`` keeps the default XNNPACK delegate from swallowing ops, so an
    audit sees the model's own op list.
    """
    kw = {"model_content": model} if isinstance(model, bytes) else {"model_path": str(model)}
    if not delegates:
        kw["experimental_op_resolver_type"] = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    it = Interpreter(num_threads=threads, **kw)
    it.allocate_tensors()
    return it


def op_audit(model: bytes | str) -> list[dict]:
    """Every op with its operand and result types, and the tensor name it writes.

    An op is ``float`` when any operand or result is a float type, ``flex`` when it is a
    TensorFlow (Flex) op — either means the model is not pure integer.
    """
    it = interpreter(model, threads=1, delegates=False)
    names = {t["index"]: t["name"] for t in it.get_tensor_details()}
    rows = []
    for op in it._get_ops_details():
        types = [np.dtype(t).name for t in (*op["operand_types"], *op["result_types"])]
        out = [names.get(int(i), "") for i in op["outputs"]]
        rows.append({"op": op["op_name"],
                     "inputs": [np.dtype(t).name for t in op["operand_types"]],
                     "outputs": [np.dtype(t).name for t in op["result_types"]],
                     "where": out[0] if out else "",
                     "float": any(t.startswith(("float", "bfloat", "complex")) for t in types),
                     "flex": op["op_name"].startswith("Flex") or op["op_name"] == "DELEGATE"})
    return rows


def undelegated_ops(model: bytes | str, threads: int = 2) -> dict:
    """Which ops the default XNNPACK delegate leaves to TFLite's own kernels.

    Every op XNNPACK refuses (an int8 HARD_SWISH, an ADD whose scales are out of its
    range) runs on a slower reference kernel and splits the delegated graph in two, so
    ``partitions`` > 1 means a model runs below what this CPU can do. The uint8↔int8
    QUANTIZE at the ends and an int8 SOFTMAX are expected outside.

    Returns:
        ``{"partitions": n, "ops": {op name: count}}``.
    """
    it = interpreter(model, threads)
    ops = it._get_ops_details()
    delegates = [o for o in ops if o["op_name"] == "DELEGATE"]
    own = [o for o in ops if o["op_name"] != "DELEGATE"]
    graph_out = {int(d["index"]) for d in it.get_output_details()}
    counts: dict[str, int] = {}
    for op in _outside(own, delegates, graph_out):
        counts[op["op_name"]] = counts.get(op["op_name"], 0) + 1
    return {"partitions": len(delegates), "ops": counts}


def _outside(own: list[dict], delegates: list[dict], graph_out: set[int]) -> list[dict]:
    """The ops no delegate node covers, found backwards from the tensors that cross over.

    An op is outside when it writes a delegate's input or the graph's output (or feeds an
    op that is outside) but none of the delegates' outputs: tensors internal to a delegated
    partition never appear in its node's inputs or outputs.
    """
    d_in = {int(t) for o in delegates for t in o["inputs"]}
    d_out = {int(t) for o in delegates for t in o["outputs"]}
    consumers: dict[int, list[int]] = {}
    for i, o in enumerate(own):
        for t in o["inputs"]:
            consumers.setdefault(int(t), []).append(i)
    outside: set[int] = set()
    for i in reversed(range(len(own))):  # execution order reversed: consumers come first
        outs = {int(t) for t in own[i]["outputs"]}
        if not outs & d_out and (outs & (d_in | graph_out) or any(
                c in outside for t in outs for c in consumers.get(t, ()))):
            outside.add(i)
    return [own[i] for i in sorted(outside)]


def non_integer_ops(audit: list[dict]) -> list[dict]:
    """The rows of an audit that keep a model from being full-integer."""
    return [r for r in audit if r["float"] or r["flex"]]


def _quantize_input(x: np.ndarray, detail: dict) -> np.ndarray:
    """Raw 0–255 pixels → the input tensor's dtype, using its quantization if any."""
    dtype = detail["dtype"]
    if np.issubdtype(dtype, np.floating):
        return x.astype(dtype)
    scale, zero = detail["quantization"]
    q = np.round(x / scale + zero) if scale else x
    info = np.iinfo(dtype)
    return np.clip(q, info.min, info.max).astype(dtype)


def _dequantize(y: np.ndarray, detail: dict) -> np.ndarray:
    scale, zero = detail["quantization"]
    if np.issubdtype(y.dtype, np.integer) and scale:
        return (y.astype(np.float32) - zero) * scale
    return y.astype(np.float32)


def run_batch(it: Interpreter, images: np.ndarray) -> np.ndarray:
    """Outputs (dequantized) for a stack of raw 0–255 images, one invoke per image."""
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    results = []
    for img in images:
        it.set_tensor(inp["index"], _quantize_input(img[None].astype(np.float32), inp))
        it.invoke()
        results.append(_dequantize(it.get_tensor(out["index"])[0], out))
    return np.stack(results)


def latency_ms(it: Interpreter, image: np.ndarray, runs: int = 50) -> float:
    """Median single-image latency in milliseconds after a few warm-up runs."""
    inp = it.get_input_details()[0]
    it.set_tensor(inp["index"], _quantize_input(image[None].astype(np.float32), inp))
    for _ in range(5):
        it.invoke()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        it.invoke()
        times.append(time.perf_counter() - t)
    return float(np.median(times) * 1e3)
