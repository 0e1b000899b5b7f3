"""The tied LM head's product and its gradients: right numbers, and no ``(..., V, C)``
broadcast in the gradient graph (einsum's gradient made one: 74.7 GiB for gpt2 at 4 x 128)."""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from cases import assert_close  # noqa: E402
from gpt2_dual.tf.heads import tied_product  # noqa: E402

B, T, C, V = 2, 3, 5, 11


def _inputs():
    rng = np.random.default_rng(0)
    hidden = rng.standard_normal((B, T, C)).astype(np.float32)
    table = rng.standard_normal((V, C)).astype(np.float32)
    upstream = rng.standard_normal((B, T, V)).astype(np.float32)
    return hidden, table, upstream


def test_values_and_gradients_equal_the_plain_products():
    hidden, table, upstream = _inputs()
    h, w = tf.constant(hidden), tf.constant(table)
    with tf.GradientTape() as tape:
        tape.watch([h, w])
        out = tied_product(h, w)
        objective = tf.reduce_sum(out * upstream)
    grad_h, grad_w = tape.gradient(objective, [h, w])
    assert out.shape == (B, T, V)
    assert_close(out.numpy(), hidden @ table.T, what="logits")
    assert_close(grad_h.numpy(), upstream @ table, what="d hidden")
    assert_close(grad_w.numpy(), upstream.reshape(-1, V).T @ hidden.reshape(-1, C), what="d table")


@pytest.mark.parametrize("jit", [False, True], ids=["graph", "xla"])
def test_no_gradient_op_is_larger_than_the_logits_or_the_table(jit):
    hidden, table, upstream = _inputs()

    @tf.function(jit_compile=jit)
    def grads(h, w):
        with tf.GradientTape() as tape:
            tape.watch([h, w])
            objective = tf.reduce_sum(tied_product(h, w) * upstream)
        return tape.gradient(objective, [h, w])

    graph = grads.get_concrete_function(tf.constant(hidden), tf.constant(table)).graph
    limit = max(B * T * V, V * C)
    sizes = {
        op.name: out.shape.num_elements()
        for op in graph.get_operations()
        for out in op.outputs
        if out.shape.num_elements() is not None
    }
    too_big = {name: n for name, n in sizes.items() if n > limit}
    assert not too_big, f"ops larger than {limit} elements: {too_big}"
