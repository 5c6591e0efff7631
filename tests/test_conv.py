"""The im2col convolution and reshape pooling equal XLA's convolution and nn.max_pool."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bnjax.config import ModelConfig
from bnjax.conv import conv2d_im2col, max_pool_2x2
from bnjax.models import build_model

jax.config.update("jax_default_matmul_precision", "highest")


def _xla(x, k, padding="SAME"):
    return jax.lax.conv_general_dilated(x, k, (1, 1), padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))


@pytest.mark.parametrize("ksize,shape", [(5, (3, 12, 10, 2)), (3, (2, 7, 7, 4)), (4, (2, 9, 8, 3)), (1, (2, 5, 5, 3))])
def test_im2col_equals_conv_general_dilated(ksize, shape):
    x = jax.random.normal(jax.random.PRNGKey(0), shape)
    k = jax.random.normal(jax.random.PRNGKey(1), (ksize, ksize, shape[-1], 6))
    np.testing.assert_allclose(conv2d_im2col(x, k), _xla(x, k), rtol=1e-5, atol=1e-5)
    dy = jax.random.normal(jax.random.PRNGKey(2), (*shape[:3], 6))
    g1 = jax.grad(lambda x, k: jnp.sum(conv2d_im2col(x, k) * dy), argnums=(0, 1))(x, k)
    g2 = jax.grad(lambda x, k: jnp.sum(_xla(x, k) * dy), argnums=(0, 1))(x, k)
    for a, b in zip(g1, g2, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_im2col_valid_padding():
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 12, 10, 3))
    k = jax.random.normal(jax.random.PRNGKey(1), (5, 3, 3, 4))
    np.testing.assert_allclose(conv2d_im2col(x, k, "VALID"), _xla(x, k, "VALID"), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", [(2, 8, 8, 3), (2, 7, 5, 2)])
def test_reshape_pool_equals_max_pool(shape):
    x = jax.random.normal(jax.random.PRNGKey(3), shape)
    ref = nn.max_pool(x, (2, 2), strides=(2, 2), padding="SAME")
    np.testing.assert_array_equal(max_pool_2x2(x), ref)
    dy = jax.random.normal(jax.random.PRNGKey(4), ref.shape)
    g1 = jax.grad(lambda x: jnp.sum(max_pool_2x2(x) * dy))(x)
    g2 = jax.grad(lambda x: jnp.sum(nn.max_pool(x, (2, 2), strides=(2, 2), padding="SAME") * dy))(x)
    np.testing.assert_allclose(g1, g2)  # random inputs: no ties


def test_convnet_implementations_agree_on_the_same_parameters():
    x = jax.random.normal(jax.random.PRNGKey(5), (4, 28, 28, 1))
    a = build_model(ModelConfig(arch="convnet", norm="batch", conv_impl="im2col"))
    b = build_model(ModelConfig(arch="convnet", norm="batch", conv_impl="xla"))
    v = a.init(jax.random.PRNGKey(0), x, False)
    assert jax.tree.structure(v) == jax.tree.structure(b.init(jax.random.PRNGKey(0), x, False))
    ya, ua = a.apply(v, x, True, mutable=["batch_stats"])
    yb, ub = b.apply(v, x, True, mutable=["batch_stats"])
    np.testing.assert_allclose(ya, yb, rtol=1e-4, atol=1e-4)
    jax.tree.map(lambda p, q: np.testing.assert_allclose(p, q, rtol=1e-4, atol=1e-4), ua, ub)
