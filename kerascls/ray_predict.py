"""``kerascls predict --engine ray``: batch inference on Ray Data, same files as one process.

The driver lists the inputs (``kerascls_edge.runner``'s listing: same order, same listing
failures), skips what a checkpoint already holds, and hands the rest to Ray as a dataset.
A pool of actors, each holding one model (a TFLite bundle via ``kerascls_edge``, or the
Keras model, on a GPU if ``--ray_gpus``), decodes and classifies blocks with the edge
runner's own record code (``classify_chunk``). The driver takes the blocks back in order
(``preserve_order``) and writes each into the edge journal as one atomically published
part: a killed driver resumes from those parts (``--resume``), and the final file is
assembled by the same writer from the same journal, so it is the single-process file.

A killed actor is restarted and its block retried by Ray (``max_restarts``,
``max_task_retries``); a block is only ever journaled once it came back whole, and the
journal ignores a file it already holds, so nothing is lost or doubled.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import os
import pickle
import re
import socket
import warnings
from typing import Optional, Sequence

import numpy as np

from kerascls_edge.bundle import EdgeError

OBJECT_STORE_BYTES = 200 * 1024 * 1024  # enough for blocks of paths and JSON records
RETRIES = 5  # actor restarts and task retries before a run gives up
BLOCK = 64  # images per actor call (and per journal part)
WINDOW = 50_000  # listed images handed to Ray per dataset run


def _item_json(item) -> str:
    return json.dumps(dataclasses.asdict(item))


def _item_from(text: str):
    from kerascls_edge.runner import Item
    d = json.loads(text)
    d["regions"] = [tuple(r) for r in d["regions"]]
    return Item(**d)


def load_classifier(kind: str, model: str, labels: Optional[str], threads: Optional[int],
                    batch_size: int):
    """The model one actor (or the driver) holds: a Keras run or a bundle."""
    if kind == "keras":
        from kerascls.keras_classifier import KerasClassifier
        return KerasClassifier(model, batch_size, threads)
    from kerascls_edge.classifier import Classifier
    return Classifier(model, labels=labels, threads=threads)


class Worker:
    """A Ray actor: one model; decodes and classifies a block of items into JSON records."""

    def __init__(self, kind: str, model: str, labels: Optional[str], threads: int,
                 batch_size: int, opts: bytes, identity: str) -> None:
        from kerascls_edge.journal import bundle_identity
        from kerascls_edge.runner import decode_job, default_decode_threads
        if not os.path.exists(model):
            raise EdgeError(f"the model {model} does not exist on Ray worker "
                            f"{socket.gethostname()}")
        self.clf = load_classifier(kind, model, labels, threads, batch_size)
        if bundle_identity(self.clf.spec.model_path, self.clf.labels) != identity:
            raise EdgeError(f"the model {model} on Ray worker {socket.gethostname()} is not "
                            "the driver's (its sha256 differs)")
        self.opts = pickle.loads(opts)
        self.job = decode_job(self.clf, self.opts)
        self.decoders = default_decode_threads(self.clf.threads)

    def __call__(self, batch: dict) -> dict:
        from kerascls_edge.runner import chunks, classify_chunk, prefetch
        items = [_item_from(t) for t in batch["item"]]
        # decode threads run ahead while this thread classifies (as in one process)
        pairs = prefetch(items, self.job, self.decoders)
        step = int(getattr(self.clf, "batch_size", 1))
        recs = [r for chunk in chunks(pairs, step)
                for r in classify_chunk(self.clf, chunk, self.opts)]
        return {"rec": np.array([json.dumps(r, separators=(",", ":")) for r in recs],
                                dtype=object)}


def check_address(address: str, timeout: float = 5.0) -> None:
    """Refuse an unreachable cluster address in one line, before Ray waits on it."""
    if address in ("auto", "local"):
        return
    m = re.fullmatch(r"(?:ray://)?\[?([^\]]+?)\]?:(\d+)", address)
    if not m:
        raise EdgeError(f"--ray_address {address!r}: expected HOST:PORT or ray://HOST:PORT")
    try:
        socket.create_connection((m.group(1), int(m.group(2))), timeout=timeout).close()
    except OSError as e:
        raise EdgeError(f"cannot reach the Ray cluster at {address}: "
                        f"{e.strerror or e.__class__.__name__}") from None


def init_ray(address: Optional[str], workers: int, gpus: float) -> None:
    """Join the cluster at `address`, or start a small local Ray for this run."""
    try:
        import ray
    except ImportError:
        raise EdgeError("--engine ray needs Ray: pip install 'kerascls[ray]'") from None
    if ray.is_initialized():
        return
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    if address:
        check_address(address)
    kw = dict(include_dashboard=False, log_to_driver=False, logging_level="ERROR",
              ignore_reinit_error=True)
    if not address:
        kw.update(num_cpus=max(workers, os.cpu_count() or 1),
                  object_store_memory=OBJECT_STORE_BYTES)
        if gpus:
            kw["num_gpus"] = int(np.ceil(workers * gpus))
    try:
        ray.init(address=address, **kw)
    except Exception as e:  # ConnectionError, RuntimeError, TimeoutError…: say it in one line
        raise EdgeError(f"cannot start or join Ray ({address or 'local'}): "
                        f"{str(e).splitlines()[0] if str(e) else e.__class__.__name__}"
                        ) from None


def _worker_error(e: Exception) -> EdgeError:
    """The one line a failed Ray run says: the worker's own EdgeError if it raised one."""
    text = str(e)
    m = re.findall(r"EdgeError: (.+)", text)
    if m:
        return EdgeError(f"a Ray worker failed: {m[-1].strip()}")
    first = next((line for line in text.splitlines() if line.strip()), e.__class__.__name__)
    return EdgeError(f"the Ray run failed: {first.strip()}")


@dataclasses.dataclass
class RayBackend:
    """kerascls-edge's `predict` with Ray actors classifying into its journal."""

    keras_model: bool
    batch_size: int = BLOCK
    address: Optional[str] = None
    workers: int = 1
    gpus: float = 0.0
    worker_model: Optional[str] = None
    prog: str = "kerascls"
    window: int = WINDOW

    def classifier(self, args):
        """Join/start Ray first (a bad address fails fast), then load the driver's model."""
        init_ray(self.address, self.workers, self.gpus)
        self.args = args
        kind = "keras" if self.keras_model else "bundle"
        return load_classifier(kind, args.bundle, args.labels, args.threads, self.batch_size)

    def predict(self, clf, images: Sequence[str], opts) -> dict:
        from kerascls_edge.runner import predict
        return predict(clf, images, opts, consume=self.consume)

    def _threads(self) -> int:
        """Interpreter threads per actor: the local cores shared by the local actors."""
        if self.args.threads and self.workers == 1:
            return int(self.args.threads)
        return max(1, (os.cpu_count() or 1) // self.workers) if not self.address else 0

    def _ctor(self, clf, opts) -> dict:
        """What each actor is built with: the model as the workers see it, and its sha256."""
        from kerascls_edge.journal import bundle_identity
        return dict(kind="keras" if self.keras_model else "bundle",
                    model=self.worker_model or os.path.abspath(self.args.bundle),
                    labels=os.path.abspath(self.args.labels) if self.args.labels else None,
                    threads=self._threads() or None, batch_size=self.batch_size,
                    opts=pickle.dumps(opts),
                    identity=bundle_identity(clf.spec.model_path, clf.labels))

    def consume(self, clf, items, journal, opts, progress) -> None:
        """Classify what the journal lacks on the Ray pool, one journal part per block.

        The listing goes to Ray a window at a time, so the driver and the object store hold
        one window of paths, not a whole programme's millions.
        """
        ctor = self._ctor(clf, opts)
        from kerascls_edge.runner import pending

        todo = (_item_json(it) for it in pending(items, journal))  # new or changed
        # a failure becomes our one line below; Ray Data would print its trace first
        logging.getLogger("ray.data.exceptions").disabled = True
        try:
            while window := list(itertools.islice(todo, self.window)):
                self._run(window, ctor, journal, progress)
        except (KeyboardInterrupt, EdgeError):
            raise
        except Exception as e:  # a worker that cannot load the model, a lost cluster…
            raise _worker_error(e) from None
        finally:
            journal.flush()

    def _run(self, todo: list[str], ctor: dict, journal, progress) -> None:
        """One Ray Data run over a window of items, journaled block by block, in order."""
        import ray
        ds = ray.data.from_items([{"item": t} for t in todo],
                                 override_num_blocks=max(1, -(-len(todo) // self.batch_size)))
        ctx = ds.context
        ctx.execution_options.preserve_order = True
        ctx.enable_progress_bars = False
        res = {"num_gpus": self.gpus} if self.gpus else {"num_cpus": 1}
        with warnings.catch_warnings():  # max_restarts has no named parameter (Ray 2.60)
            warnings.simplefilter("ignore")
            ds = ds.map_batches(Worker, fn_constructor_kwargs=ctor, batch_size=self.batch_size,
                                compute=ray.data.ActorPoolStrategy(size=self.workers),
                                max_restarts=RETRIES, max_task_retries=RETRIES,
                                batch_format="numpy", **res)
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=1):
            for text in batch["rec"]:
                rec = json.loads(text)
                failed = bool(rec.get("failure") or rec.pop("_failed", False))
                journal.add(rec)
                progress.tick(failed)
            journal.flush()
