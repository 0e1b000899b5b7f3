"""``fit`` under ``tf.distribute.MirroredStrategy`` gives the loss curve of one device.

Two logical CPU devices must be configured before TensorFlow initialises its devices, so the
training runs in a fresh interpreter (``_SCRIPT``) that writes its results to an ``.npz`` file.
Both runs start from the same weights, see the same global batches in the same order (dropout
off, plain SGD); the mirrored run splits each batch over the two replicas.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from cases import assert_close

pytest.importorskip("tensorflow")

TESTS = Path(__file__).resolve().parents[1]

_SCRIPT = textwrap.dedent(
    """
    import sys

    import numpy as np
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

    import keras

    sys.path.insert(0, {tests!r})
    from cases import tiny_config

    import gpt2_dual.tf as gpt
    from gpt2_dual.tf.weights import to_canonical

    rng = np.random.default_rng(0)
    ids = rng.integers(0, 98, (16, 7)).astype("int32")
    mc = {{"input_ids": ids.reshape(8, 2, 7), "labels": ids.reshape(8, 2, 7),
          "mc_token_ids": np.full((8, 2), 6, "int32"),
          "mc_labels": rng.integers(0, 2, 8).astype("int32")}}
    DATA = {{"lm": {{"input_ids": ids, "labels": ids}}, "double_heads": mc}}


    def run(head, strategy, start):
        with strategy.scope():
            model = gpt.build(head, tiny_config(pad_token_id=98))
            model.set_weights(start)
            model.compile(optimizer=keras.optimizers.SGD(0.5))
        data = tf.data.Dataset.from_tensor_slices(DATA[head]).batch(4)  # global batch 4
        history = model.fit(data, epochs=3, verbose=0, shuffle=False).history["loss"]
        return np.array(history), to_canonical(model)


    # One strategy object for the process: a second MirroredStrategy reuses collective keys
    # of the first and TF 2.21 then mixes up the two models' gradient all-reduces.
    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    results = {{}}
    for head in DATA:
        keras.utils.set_random_seed(0)
        start = gpt.build(head, tiny_config(pad_token_id=98)).get_weights()
        one = run(head, tf.distribute.OneDeviceStrategy("/cpu:0"), start)
        two = run(head, mirrored, start)
        for tag, (losses, state) in (("one", one), ("two", two)):
            results[f"{{head}}/{{tag}}/loss"] = losses
            results[f"{{head}}/{{tag}}/wte"] = state["wte.weight"]
            results[f"{{head}}/{{tag}}/c_attn"] = state["h.1.attn.c_attn.weight"]
    np.savez(sys.argv[1], **results)
    """
)


def test_mirrored_fit_matches_one_device(tmp_path):
    out = tmp_path / "runs.npz"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONWARNINGS="ignore")
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT.format(tests=str(TESTS)), str(out)],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    runs = np.load(out)
    for head in ("lm", "double_heads"):
        one, two = runs[f"{head}/one/loss"], runs[f"{head}/two/loss"]
        assert one.shape == (3,) and one[-1] < one[0], one  # it trained
        assert_close(two, one, what=f"{head}: loss per epoch, 2 replicas vs 1 device")
        for name in ("wte", "c_attn"):
            assert_close(
                runs[f"{head}/two/{name}"], runs[f"{head}/one/{name}"],
                what=f"{head}: {name} after training",
            )  # fmt: skip
