"""Which devices a run trains on: one tf.distribute strategy per run.

``--devices`` is empty (every visible GPU with MirroredStrategy when there are two or more,
else the default single-device strategy, so a CPU run costs nothing extra), ``gpu`` or
``gpu:0,2`` (those GPUs), or ``cpu:N`` (N logical CPU devices, how tests exercise
multi-replica training without GPUs). ``--batch_size`` stays the global batch: Keras splits
each batch over the replicas and scales the loss by the global size, so N replicas follow
the same trajectory as one device on the same batches (BatchNorm aside: its statistics are
per replica).
"""

from __future__ import annotations

import json
import os

import tensorflow as tf

from kerascls.errors import UserError


def parse_devices(spec: str) -> tuple[str, list[int] | int | None]:
    """``""`` → ("auto", None); ``gpu`` → ("gpu", None); ``gpu:0,1`` → ("gpu", [0, 1]);
    ``cpu:2`` → ("cpu", 2)."""
    kind, _, rest = (spec or "auto").partition(":")
    if kind == "cpu":
        counts = _numbers(spec, rest or "1")
        if len(counts) != 1 or counts[0] < 1:
            raise UserError(f"--devices={spec}: cpu:N needs one N >= 1")
        return kind, counts[0]
    if kind == "gpu":
        return kind, _numbers(spec, rest) if rest else None
    if kind == "auto" and not rest:
        return kind, None
    raise UserError(f"--devices={spec!r}: use gpu, gpu:0,1 or cpu:N (empty: every GPU)")


def _numbers(spec: str, text: str) -> list[int]:
    """``0,2`` → [0, 2]; anything else is a one-line error naming ``--devices``."""
    try:
        return [int(i) for i in text.split(",")]
    except ValueError:
        raise UserError(f"--devices={spec!r}: {text!r} is not a number or a comma-separated "
                        "list of numbers") from None


def make_strategy(spec: str = "", multi_worker: bool = True) -> tf.distribute.Strategy:
    """The strategy for ``--devices``; call before TensorFlow runs any op (logical CPU
    devices can only be configured while the runtime is not yet initialized).
    ``multi_worker=False`` (one-process inference) ignores a ``TF_CONFIG`` cluster."""
    if multi_worker and worker_count() > 1:
        return tf.distribute.MultiWorkerMirroredStrategy()
    kind, arg = parse_devices(spec)
    gpus = tf.config.list_physical_devices("GPU")
    if kind == "cpu":
        return _cpu_strategy(arg)
    if kind == "gpu":
        if not gpus:
            raise UserError(f"--devices={spec}: no GPU visible")
        ids = arg if arg is not None else range(len(gpus))
        bad = [i for i in ids if i >= len(gpus)]
        if bad:
            raise UserError(f"--devices={spec}: GPU {bad[0]} not visible ({len(gpus)} GPUs)")
        return _mirrored([f"/gpu:{i}" for i in ids])
    return _mirrored([f"/gpu:{i}" for i in range(len(gpus))]) if len(gpus) > 1 \
        else tf.distribute.get_strategy()


def _mirrored(devices: list[str]) -> tf.distribute.Strategy:
    if len(devices) == 1:
        return tf.distribute.OneDeviceStrategy(devices[0])
    return tf.distribute.MirroredStrategy(devices)


def _cpu_strategy(count: int) -> tf.distribute.Strategy:
    """``count`` logical CPU devices (split from the first physical CPU) mirrored."""
    if count == 1:
        return tf.distribute.OneDeviceStrategy("/cpu:0")
    cpu = tf.config.list_physical_devices("CPU")[0]
    config = [tf.config.LogicalDeviceConfiguration()] * count
    try:
        tf.config.set_logical_device_configuration(cpu, config)
    except RuntimeError as e:  # runtime already initialized: fine if it already matches
        if len(tf.config.list_logical_devices("CPU")) < count:
            raise RuntimeError(f"cannot make {count} logical CPUs now: {e}") from e
    return tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(count)])


def worker_count() -> int:
    """Tasks named in ``TF_CONFIG`` (0 without it)."""
    cluster = _tf_config().get("cluster", {})
    return len(cluster.get("worker", [])) + len(cluster.get("chief", []))


def worker_index() -> int:
    """This process's rank: 0 for the chief (a ``chief`` task, else worker 0), which writes
    the run; workers follow in order after it."""
    config = _tf_config()
    task = config.get("task", {})
    chiefs = len(config.get("cluster", {}).get("chief", []))
    return int(task.get("index", 0)) + (chiefs if task.get("type") == "worker" else 0)


def _tf_config() -> dict:
    """``TF_CONFIG`` parsed and checked, so a typo stops the run with one line instead of a
    worker that waits forever for peers that do not exist."""
    text = os.environ.get("TF_CONFIG") or "{}"
    try:
        config = json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"TF_CONFIG is not valid JSON ({e}): {text[:80]!r}") from None
    if not isinstance(config, dict):
        raise UserError(f"TF_CONFIG must be a JSON object, got {text[:80]!r}")
    cluster, task = config.get("cluster", {}), config.get("task", {})
    if not isinstance(cluster, dict) or not isinstance(task, dict):
        raise UserError("TF_CONFIG: 'cluster' and 'task' must be JSON objects")
    if cluster:
        kind, index = task.get("type"), task.get("index", 0)
        tasks = cluster.get(kind) if kind in ("chief", "worker") else None
        if not isinstance(tasks, list) or not isinstance(index, int) \
                or not 0 <= index < len(tasks):
            raise UserError(f"TF_CONFIG: task {task} is not one of the cluster's chief/worker "
                            f"tasks {json.dumps(cluster)}")
    return config


def auto_precision(spec: str = "") -> str:
    """What ``--mixed_precision auto`` means on the devices ``--devices`` picks.

    ``mixed_bfloat16`` where the hardware multiplies bfloat16 natively: every GPU the run
    uses has compute capability 8.0+ (Ampere and later), or, on a CPU run, the CPU has
    bfloat16 instructions (AMX-BF16 or AVX512-BF16) and TensorFlow's oneDNN kernels are on
    (not ``TF_ENABLE_ONEDNN_OPTS=0``). The default small_cnn then trains faster and as
    accurately: 1.40× float32's img/s on a Xeon with AMX, 1.23× on an AMD EPYC (Zen 5) with
    AVX512-BF16 (README, bench/train_step_cpu.py). Anything else keeps float32 (``none``):
    without those instructions bfloat16 is converted in software, and float16 needs loss
    scaling that older GPUs do not repay for these models.
    """
    kind, arg = parse_devices(spec)
    gpus = [] if kind == "cpu" else tf.config.list_physical_devices("GPU")
    if kind == "gpu" and arg is not None:
        gpus = [gpus[i] for i in arg if i < len(gpus)]
    if gpus:
        native = all(_compute_capability(gpu) >= (8, 0) for gpu in gpus)
    else:
        native = _cpu_has_bf16() and os.environ.get("TF_ENABLE_ONEDNN_OPTS") != "0"
    return "mixed_bfloat16" if native else "none"


def _compute_capability(gpu) -> tuple[int, int]:
    """A GPU's (major, minor) compute capability; (0, 0) when TensorFlow cannot say."""
    details = tf.config.experimental.get_device_details(gpu)
    return tuple(details.get("compute_capability") or (0, 0))


CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # /proc/cpuinfo names of bfloat16 instructions


def _cpu_has_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether the CPU lists a bfloat16 instruction set (Linux; False without a cpuinfo)."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return not set(CPU_BF16_FLAGS).isdisjoint(line.split())
    except OSError:
        pass
    return False
