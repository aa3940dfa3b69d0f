"""Multi-worker training (MultiWorkerMirroredStrategy, ``TF_CONFIG``) with a custom step.

Keras 3's ``model.fit`` fails under MultiWorkerMirroredStrategy (keras-team/keras#20585,
tensorflow#72388) and its BackupAndRestore is not multi-worker aware, so workers run one
``strategy.run`` step here: per-example loss averaged over the global batch, gradients
all-reduced by the Keras optimizer's distributed update. Every worker takes the same fixed
number of steps (an uneven last batch would leave one worker waiting in a collective).
Worker i writes ``RUN/workers/i.weights.h5``; the chief (index 0) writes the run files.
Multi-worker runs do not resume: a crash restarts the run.
"""

from __future__ import annotations

import time
from pathlib import Path

import keras
import tensorflow as tf

from kerascls.training.distribute import worker_index


def fit_multiworker(model: keras.Model, optimizer: keras.optimizers.Optimizer,
                    loss_fn: keras.losses.Loss, dataset: tf.data.Dataset, steps: int,
                    epochs: int, global_batch: int, strategy: tf.distribute.Strategy,
                    run: Path) -> list[dict]:
    """Train ``epochs`` × ``steps`` global batches; returns one history row per epoch."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    dist = iter(strategy.experimental_distribute_dataset(dataset.repeat().with_options(options)))
    step = _step_fn(model, optimizer, loss_fn, strategy, global_batch)
    sync = _sync_fn(model, strategy)
    history = []
    for epoch in range(epochs):
        started, total = time.time(), 0.0
        for _ in range(steps):
            total += float(step(next(dist)))
        sync()
        row = {"epoch": epoch, "loss": total / steps,
               "learning_rate": float(keras.ops.convert_to_numpy(optimizer.learning_rate))}
        history.append(row)
        print(f"worker {worker_index()} epoch {epoch + 1}/{epochs} - loss {row['loss']:.4f} - "
              f"{time.time() - started:.0f}s", flush=True)
    (run / "workers").mkdir(parents=True, exist_ok=True)
    model.save_weights(run / "workers" / f"{worker_index()}.weights.h5")
    return history


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
