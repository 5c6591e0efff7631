"""The im2col convolution and reshape pooling equal XLA's convolution and nn.max_pool."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bnjax.config import ModelConfig
from bnjax.conv import conv2d_im2col, conv2d_pool_s2d, max_pool_2x2, pool_fusable, window_max
from bnjax.models import build_model


def _xla(x, k, padding="SAME"):
    return jax.lax.conv_general_dilated(x, k, (1, 1), padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))


@pytest.mark.parametrize("ksize,shape", [(5, (3, 12, 10, 2)), (3, (2, 7, 7, 4)), (4, (2, 9, 8, 3)), (1, (2, 5, 5, 3))])
def test_im2col_equals_conv_general_dilated(ksize, shape):
    x = jax.random.normal(jax.random.key(0), shape)
    k = jax.random.normal(jax.random.key(1), (ksize, ksize, shape[-1], 6))
    np.testing.assert_allclose(jax.jit(conv2d_im2col)(x, k), _xla(x, k), rtol=1e-5, atol=1e-5)
    dy = jax.random.normal(jax.random.key(2), (*shape[:3], 6))
    g1 = jax.jit(jax.grad(lambda x, k: jnp.sum(conv2d_im2col(x, k) * dy), argnums=(0, 1)))(x, k)  # one program
    g2 = jax.jit(jax.grad(lambda x, k: jnp.sum(_xla(x, k) * dy), argnums=(0, 1)))(x, k)
    for a, b in zip(g1, g2, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_im2col_valid_padding():
    x = jax.random.normal(jax.random.key(0), (2, 12, 10, 3))
    k = jax.random.normal(jax.random.key(1), (5, 3, 3, 4))
    np.testing.assert_allclose(conv2d_im2col(x, k, "VALID"), _xla(x, k, "VALID"), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kernel,shape,padding", [
    ((5, 5), (3, 28, 28, 1), "VALID"), ((3, 3), (2, 12, 12, 24), "VALID"), ((5, 5), (2, 8, 8, 1), "SAME"),
    ((3, 3), (2, 14, 10, 4), "SAME"), ((4, 4), (2, 9, 7, 3), "VALID"), ((4, 2), (2, 6, 8, 2), "SAME"),
    ((1, 1), (2, 4, 6, 3), "VALID"),
])
def test_pool_layout_conv_is_conv_general_dilated_grouped_by_pooling_window(kernel, shape, padding):
    """z[n, p, q, 2*di + dj] == y[n, 2p + di, 2q + dj] for y = lax.conv, values and gradients."""
    x = jax.random.normal(jax.random.key(0), shape)
    k = jax.random.normal(jax.random.key(1), (*kernel, shape[-1], 5))
    assert pool_fusable(shape, kernel, padding)

    def grouped_ref(x, k):
        y = _xla(x, k, padding)
        n, h, w, o = y.shape
        return y.reshape(n, h // 2, 2, w // 2, 2, o).transpose(0, 1, 3, 2, 4, 5).reshape(n, h // 2, w // 2, 4, o)

    z, ref = jax.jit(conv2d_pool_s2d, static_argnums=2)(x, k, padding), jax.jit(grouped_ref)(x, k)
    assert z.shape == ref.shape
    np.testing.assert_allclose(z, ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(z.max(axis=3), nn.max_pool(_xla(x, k, padding), (2, 2), (2, 2)), rtol=1e-5, atol=1e-5)
    dz = jax.random.normal(jax.random.key(2), z.shape)
    g1 = jax.jit(jax.grad(lambda x, k: jnp.sum(conv2d_pool_s2d(x, k, padding) * dz), argnums=(0, 1)))(x, k)
    g2 = jax.jit(jax.grad(lambda x, k: jnp.sum(grouped_ref(x, k) * dz), argnums=(0, 1)))(x, k)  # one program
    for a, b in zip(g1, g2, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_window_max_gradient_goes_to_the_first_maximum_like_xla_max_pool():
    """With many ties (small integers), the gradient equals nn.max_pool's select-and-scatter."""
    y = jnp.round(jax.random.normal(jax.random.key(7), (3, 6, 8, 5)))
    n, h, w, c = y.shape
    group = lambda y: y.reshape(n, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 2, 4, 5).reshape(n, h // 2, w // 2, 4, c)  # noqa: E731
    dy = jax.random.normal(jax.random.key(8), (n, h // 2, w // 2, c))
    ref_fn = lambda y: jnp.sum(nn.max_pool(y, (2, 2), (2, 2)) * dy)  # noqa: E731
    np.testing.assert_array_equal(window_max(group(y), 3), nn.max_pool(y, (2, 2), (2, 2)))
    g = jax.grad(lambda y: jnp.sum(window_max(group(y), 3) * dy))(y)
    assert int(jnp.sum(group(y) == window_max(group(y), 3)[:, :, :, None])) > n * h * w * c // 4 + 20  # ties exist
    np.testing.assert_array_equal(g, jax.grad(ref_fn)(y))


def test_pool_layout_refuses_odd_conv_outputs():
    assert not pool_fusable((2, 7, 7, 1), (3, 3), "SAME")
    assert not pool_fusable((2, 8, 8, 1), (4, 4), "VALID")  # 5x5 output
    assert not pool_fusable((2, 8, 8), (3, 3), "SAME")
    with pytest.raises(ValueError, match="even VALID conv output"):
        conv2d_pool_s2d(jnp.zeros((2, 8, 8, 1)), jnp.zeros((4, 4, 1, 3)), "VALID")


@pytest.mark.parametrize("shape", [(2, 8, 8, 3), (2, 7, 5, 2)])
def test_reshape_pool_equals_max_pool(shape):
    x = jax.random.normal(jax.random.key(3), shape)
    ref = nn.max_pool(x, (2, 2), strides=(2, 2), padding="SAME")
    np.testing.assert_array_equal(max_pool_2x2(x), ref)
    dy = jax.random.normal(jax.random.key(4), ref.shape)
    g1 = jax.grad(lambda x: jnp.sum(max_pool_2x2(x) * dy))(x)
    g2 = jax.grad(lambda x: jnp.sum(nn.max_pool(x, (2, 2), strides=(2, 2), padding="SAME") * dy))(x)
    np.testing.assert_allclose(g1, g2)  # random inputs: no ties


@pytest.mark.parametrize("padding,side", [("same", 28), ("valid", 28), ("same", 30)])
def test_convnet_implementations_agree_on_the_same_parameters(padding, side):
    """im2col (with the pooling-window layout where it applies: 28 -> 14 -> 7 SAME, 28 -> 24 -> 12 -> 10
    -> 5 VALID, and 30 -> 15 whose second stage falls back to plain im2col) equals lax.conv + max_pool."""
    x = jax.random.normal(jax.random.key(5), (4, side, side, 1))
    a = build_model(ModelConfig(arch="convnet", norm="batch", conv_impl="im2col", padding=padding))
    b = build_model(ModelConfig(arch="convnet", norm="batch", conv_impl="xla", padding=padding))
    v = jax.jit(lambda k: a.init(k, x, False))(jax.random.key(0))  # jitted: one program each, as in training
    assert jax.tree.structure(v) == jax.tree.structure(jax.eval_shape(lambda k: b.init(k, x, False), jax.random.key(0)))
    ya, ua = jax.jit(lambda v: a.apply(v, x, True, mutable=["batch_stats"]))(v)
    yb, ub = jax.jit(lambda v: b.apply(v, x, True, mutable=["batch_stats"]))(v)
    np.testing.assert_allclose(ya, yb, rtol=1e-4, atol=1e-4)
    jax.tree.map(lambda p, q: np.testing.assert_allclose(p, q, rtol=1e-4, atol=1e-4), ua, ub)
    loss = lambda m: lambda p: jnp.sum(m.apply({**v, "params": p}, x, True, mutable=["batch_stats"])[0] ** 2)  # noqa: E731
    ga, gb = jax.jit(jax.grad(loss(a)))(v["params"]), jax.jit(jax.grad(loss(b)))(v["params"])
    jax.tree.map(lambda p, q: np.testing.assert_allclose(p, q, rtol=1e-3, atol=1e-3), ga, gb)
