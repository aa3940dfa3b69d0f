"""Multi-worker training (MultiWorkerMirroredStrategy, ``TF_CONFIG``) with a custom step.

Keras 3's ``model.fit`` fails under MultiWorkerMirroredStrategy (keras-team/keras#20585,
tensorflow#72388) and its BackupAndRestore is not multi-worker aware, so workers run one
``strategy.run`` step here: per-example loss averaged over the global batch, gradients
all-reduced by the Keras optimizer's distributed update. Every worker takes the same fixed
number of steps (an uneven last batch would leave one worker waiting in a collective).
Worker i writes ``RUN/workers/i.weights.h5``; the chief (rank 0) writes the run files.

Resume: the chief saves the resume state (every model and optimizer variable, the epoch and
step reached, the history rows so far) into ``RUN/backup_workers/`` at each epoch end and
every ``checkpoint_every_steps`` steps. Every variable here is a Mirrored ON_WRITE variable,
so the chief reads its own local copies without a collective and the other workers need not
take part (TF's ``tf.train.Checkpoint`` path, by contrast, needs every worker to save, the
others into temporary directories). On start every worker runs one broadcast: the chief's
restored values (or its fresh ones) are all-reduced with zeros from everyone else, so all
workers continue from the same weights and step even when only the chief's output directory
holds the state. The input pipeline restarts after a resume (the shuffle order is not
replayed), so a resumed run is not bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from kerascls.errors import UserError
from kerascls.evaluation.metrics import write_csv
from kerascls.training.distribute import worker_index
from kerascls.utils import atomic_path

STATE_DIR = "backup_workers"  # "backup*": refuse_finished_run lets a rerun resume it


@dataclass
class Progress:
    """Where a run stands: ``step`` steps of epoch ``epoch`` done, their summed loss."""

    epoch: int = 0
    step: int = 0
    loss_sum: float = 0.0
    history: list[dict] = field(default_factory=list)


def fit_multiworker(model: keras.Model, optimizer: keras.optimizers.Optimizer,
                    loss_fn: keras.losses.Loss, dataset: tf.data.Dataset, steps: int,
                    epochs: int, global_batch: int, strategy: tf.distribute.Strategy,
                    run: Path, checkpoint_every_steps: int = 0) -> list[dict]:
    """Train ``epochs`` × ``steps`` global batches, resuming from ``RUN/backup_workers``;
    returns one history row per epoch (all of them on the chief). A lost peer worker stops
    this one with a one-line error that says how to resume."""
    optimizer.build(model.trainable_variables)  # its variables exist before the restore
    state = ResumeState(run / STATE_DIR, list(model.variables) + list(optimizer.variables))
    try:
        progress = state.restore(strategy, steps)
        train = _Epochs(model, optimizer, loss_fn, dataset, strategy, global_batch, state)
        while progress.epoch < epochs:
            progress = train.epoch(progress, steps, epochs, checkpoint_every_steps)
        (run / "workers").mkdir(parents=True, exist_ok=True)
        with atomic_path(run / "workers" / f"{worker_index()}.weights.h5") as tmp:
            model.save_weights(tmp)
        _barrier(strategy)  # every worker's weights are written: the state is not needed
    except PEER_LOST as e:
        raise PeerLost(
            f"worker {worker_index()}: another worker stopped ({type(e).__name__}); start "
            f"every worker again with the same command to resume from {state.folder}") from e
    state.remove()
    return progress.history


class PeerLost(UserError, RuntimeError):
    """Another worker stopped: the operator restarts every worker to resume (one line), a
    ``RuntimeError`` as before."""


# what a collective raises when a peer worker died (heartbeats stop) or left
PEER_LOST = (tf.errors.UnavailableError, tf.errors.AbortedError,
             tf.errors.DeadlineExceededError, tf.errors.CancelledError)


class _Epochs:
    """The compiled step and BatchNorm sync over a distributed, endless input iterator."""

    def __init__(self, model, optimizer, loss_fn, dataset, strategy, global_batch: int,
                 state: ResumeState):
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = \
            tf.data.experimental.AutoShardPolicy.DATA
        self.batches = iter(strategy.experimental_distribute_dataset(
            dataset.repeat().with_options(options)))
        self.step = _step_fn(model, optimizer, loss_fn, strategy, global_batch)
        self.sync = _sync_fn(model, strategy)
        self.optimizer, self.state = optimizer, state

    def epoch(self, progress: Progress, steps: int, epochs: int, every: int) -> Progress:
        """The rest of ``progress.epoch`` (state saved every ``every`` global steps and at
        the end); the progress at the start of the next epoch."""
        started = time.time()
        while progress.step < steps:
            progress.loss_sum += float(self.step(next(self.batches)))
            progress.step += 1
            if every and progress.step < steps and \
                    (progress.epoch * steps + progress.step) % every == 0:
                self.state.save(progress, steps)
        self.sync()
        row = {"epoch": progress.epoch, "loss": progress.loss_sum / steps,
               "learning_rate": float(keras.ops.convert_to_numpy(self.optimizer.learning_rate))}
        print(f"worker {worker_index()} epoch {progress.epoch + 1}/{epochs} - loss "
              f"{row['loss']:.4f} - {time.time() - started:.0f}s", flush=True)
        progress = Progress(progress.epoch + 1, 0, 0.0, [*progress.history, row])
        self.state.save(progress, steps)
        return progress


class ResumeState:
    """The chief's resume state: ``state.json`` (progress, history, variable shapes) naming
    one ``state-STEP.npz`` (variable values); each file is written atomically and the JSON
    last, so a crash at any point leaves the previous complete state."""

    def __init__(self, folder: Path, variables: list):
        self.folder, self.variables = folder, variables
        self.chief = worker_index() == 0

    def save(self, progress: Progress, steps: int) -> None:
        """Write the state (chief only; the other workers return at once)."""
        if not self.chief:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"state-{progress.epoch * steps + progress.step:09d}.npz"
        with atomic_path(self.folder / name) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, *[keras.ops.convert_to_numpy(v) for v in self.variables])
        meta = {"epoch": progress.epoch, "step": progress.step, "steps_per_epoch": steps,
                "loss_sum": progress.loss_sum, "history": progress.history, "arrays": name,
                "shapes": self._shapes()}
        with atomic_path(self.folder / "state.json") as tmp:
            tmp.write_text(json.dumps(meta, indent=1))
        for old in self.folder.glob("state-*.npz"):
            if old.name != name:
                old.unlink(missing_ok=True)
        if progress.history:  # the finished epochs, visible while the run goes on
            with atomic_path(self.folder.parent / "history.csv") as tmp:
                write_csv(progress.history, tmp)

    def restore(self, strategy: tf.distribute.Strategy, steps: int) -> Progress:
        """Every worker: the chief loads its state (if any), then all take its values."""
        progress = self._load(steps) if self.chief else Progress()
        counters = tf.constant([progress.epoch, progress.step, progress.loss_sum], tf.float64)
        counters = _broadcast(strategy, self.variables, counters)
        epoch, step, loss_sum = (float(c) for c in counters)
        if epoch or step:
            print(f"worker {worker_index()} resumes at epoch {int(epoch) + 1} step "
                  f"{int(step)}/{steps} ({self.folder})", flush=True)
        return Progress(int(epoch), int(step), loss_sum, progress.history)

    def _load(self, steps: int) -> Progress:
        """The chief's saved state into its variables; a fresh Progress when there is none."""
        meta_file = self.folder / "state.json"
        if not meta_file.exists():
            return Progress()
        meta = json.loads(meta_file.read_text())
        if meta["shapes"] != self._shapes() or meta["steps_per_epoch"] != steps:
            raise UserError(f"{self.folder} holds the resume state of a different model or "
                            "data size; remove it (or pass --overwrite) to start again")
        with np.load(self.folder / meta["arrays"]) as arrays:
            for i, v in enumerate(self.variables):
                v.assign(arrays[f"arr_{i}"])
        return Progress(meta["epoch"], meta["step"], meta["loss_sum"], meta["history"])

    def _shapes(self) -> list[str]:
        """Each variable's dtype and shape (not its name: Keras numbers the layer names of
        a second model built in one process, so names differ between equal models)."""
        return [f"{keras.backend.standardize_dtype(v.dtype)}{list(v.shape)}"
                for v in self.variables]

    def remove(self) -> None:
        if self.chief:
            shutil.rmtree(self.folder, ignore_errors=True)


def _broadcast(strategy: tf.distribute.Strategy, variables: list,
               counters: tf.Tensor) -> np.ndarray:
    """Give every worker the chief's variable values and counters: an all-reduce SUM where
    only global replica 0 (the chief's first device) contributes, then a local assign."""
    def replica_fn(extra):
        ctx = tf.distribute.get_replica_context()
        first = tf.equal(ctx.replica_id_in_sync_group, 0)
        values = [tf.identity(v.value) for v in variables] + [extra]
        values = [tf.where(first, x, tf.zeros_like(x)) for x in values]
        out = list(values)
        for dtype in {x.dtype for x in values}:  # one packed all-reduce per dtype
            where = [i for i, x in enumerate(values) if x.dtype == dtype]
            reduced = ctx.all_reduce(tf.distribute.ReduceOp.SUM, [values[i] for i in where])
            for i, x in zip(where, reduced):
                out[i] = x
        return out

    @tf.function
    def run(extra):
        return strategy.run(replica_fn, args=(extra,))
    values = [strategy.experimental_local_results(x)[0] for x in run(counters)]
    for v, x in zip(variables, values[:-1]):
        v.assign(x)
    return values[-1].numpy()


def _barrier(strategy: tf.distribute.Strategy) -> None:
    """Return once every worker has reached this point (a one-number all-reduce)."""
    @tf.function
    def run():
        return strategy.run(lambda: tf.distribute.get_replica_context().all_reduce(
            tf.distribute.ReduceOp.SUM, tf.ones([])))
    strategy.experimental_local_results(run())[0].numpy()


def _step_fn(model, optimizer, loss_fn, strategy, global_batch: int):
    """A compiled step: forward/backward on each replica, loss summed over replicas."""
    def replica_step(x, y):
        with tf.GradientTape() as tape:
            per_example = loss_fn(y, model(x, training=True))
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)
            loss += tf.nn.scale_regularization_loss(tf.add_n(model.losses)) \
                if model.losses else 0.0
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    @tf.function
    def step(batch):
        per_replica = strategy.run(replica_step, args=batch)
        return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)
    return step


def _sync_fn(model, strategy):
    """Average the float non-trainable variables (BatchNorm moving statistics) over every
    replica of every worker: each replica updates them from its own share of the batch, so
    without this the workers end with different models."""
    variables = [v for v in model.non_trainable_variables
                 if "float" in str(keras.backend.standardize_dtype(v.dtype))]

    def replica_sync():
        ctx = tf.distribute.get_replica_context()
        for v in variables:
            v.assign(ctx.all_reduce(tf.distribute.ReduceOp.MEAN, tf.identity(v.value)))

    @tf.function
    def sync():
        strategy.run(replica_sync)
    return sync


def per_example_loss(loss: keras.losses.Loss) -> keras.losses.Loss:
    """The run's loss without reduction (the step averages over the global batch)."""
    config = loss.get_config()
    config["reduction"] = None
    return loss.__class__.from_config(config)
