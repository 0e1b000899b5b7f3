"""The processes of ``TrainStep`` (``gpt2_dual.tf.train_step``): ``TF_CONFIG`` and the strategy.

``TF_CONFIG`` set -> ``MultiWorkerMirroredStrategy`` (ring collectives; created before
TensorFlow runs anything); else ``MirroredStrategy`` over several GPUs, else the default
strategy. Ranks follow ``TF_CONFIG``'s order: chief first, then workers.
``pt/distributed.py`` is the PyTorch half (torchrun's environment).
"""

from __future__ import annotations

import json
import os

import tensorflow as tf

from gpt2_dual.errors import InvalidInputError

__all__ = ["make_strategy", "process_rank", "read_cluster"]


def read_cluster() -> tuple[int, int] | None:
    """``(rank, world_size)`` from ``TF_CONFIG`` (chief first, then workers), or None."""
    raw = os.environ.get("TF_CONFIG", "").strip()
    if not raw:
        return None
    try:
        config = json.loads(raw)
        cluster, task = config["cluster"], config["task"]
        order = [("chief", i) for i in range(len(cluster.get("chief", [])))]
        order += [("worker", i) for i in range(len(cluster.get("worker", [])))]
        return order.index((task["type"], int(task["index"]))), len(order)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise InvalidInputError(
            f"TF_CONFIG={raw!r} is not a cluster with this process as chief or worker ({exc})"
        ) from None


def process_rank() -> int:
    """This process's rank in ``TF_CONFIG``'s order (chief first, then workers; 0 alone), the
    rank ``TrainStep`` takes.

    Raises:
        InvalidInputError: a malformed ``TF_CONFIG``.
    """
    cluster = read_cluster()
    return 0 if cluster is None else cluster[0]


def make_strategy(cluster: tuple[int, int] | None) -> tf.distribute.Strategy:
    """The strategy for ``read_cluster()``'s answer (the rule in the module docstring)."""
    if cluster is not None:
        ring = tf.distribute.experimental.CommunicationImplementation.RING
        options = tf.distribute.experimental.CommunicationOptions(implementation=ring)
        return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    gpus = tf.config.list_logical_devices("GPU")
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy([d.name for d in gpus])
    return tf.distribute.get_strategy()
