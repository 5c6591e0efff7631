"""BatchNorm against independent references: numpy Algorithm 1/2, flax.linen.BatchNorm,
numerical gradients and the BN paper's closed-form backward pass."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from bnjax import BatchNorm, population_statistics, torch_momentum_to_flax
from bnjax.norm import MOMENTS_COLLECTION, batch_moments

EPS = 1e-5


def np_bn_train(x, gamma, beta, eps=EPS):
    """Algorithm 1 of Ioffe & Szegedy 2015 in float64 numpy, feature axis last."""
    x = x.astype(np.float64)
    axes = tuple(range(x.ndim - 1))
    mu = x.mean(axes)
    var = ((x - mu) ** 2).mean(axes)
    xhat = (x - mu) / np.sqrt(var + eps)
    return gamma * xhat + beta, mu, var


def _init_apply(module, x, **kw):
    variables = jax.jit(module.init)(jax.random.key(0), x)
    return variables, _train_apply(module, variables, x, **kw)


def _train_apply(module, variables, x, **kw):
    """``module.apply`` in training mode as one jitted program (as the train step runs it,
    instead of op by op): ``(y, {"batch_stats": ...})``."""
    return jax.jit(lambda v, x: module.apply(v, x, mutable=["batch_stats"], **kw))(variables, x)


@pytest.mark.parametrize("shape", [(32, 7), (8, 5, 6, 3)])
def test_training_matches_numpy_algorithm1(shape):
    rng = np.random.default_rng(0)
    x = rng.normal(2.0, 3.0, shape).astype(np.float32)
    gamma = rng.uniform(0.5, 2.0, shape[-1]).astype(np.float32)
    beta = rng.normal(size=shape[-1]).astype(np.float32)
    bn = BatchNorm(use_running_average=False, momentum=0.9)
    variables = jax.jit(bn.init)(jax.random.key(0), x)
    variables = {"params": {"scale": gamma, "bias": beta}, "batch_stats": variables["batch_stats"]}
    y, upd = _train_apply(bn, variables, x)
    y_ref, mu, var = np_bn_train(x, gamma, beta)
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
    # running stats: 0.9 * init + 0.1 * batch (Flax convention, biased variance)
    np.testing.assert_allclose(upd["batch_stats"]["mean"], 0.1 * mu, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(upd["batch_stats"]["var"], 0.9 + 0.1 * var, rtol=1e-5)
    assert variables["params"]["scale"].shape == (shape[-1],)  # one gamma per feature map


@pytest.mark.parametrize("variance,fast", [("two_pass", False), ("one_pass", True)])
@pytest.mark.parametrize("shape,axis", [((16, 10), -1), ((4, 6, 6, 5), -1), ((4, 5, 6, 6), 1)])
def test_parity_with_flax(variance, fast, shape, axis):
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(1.0, 2.0, shape).astype(np.float32))
    ours = BatchNorm(use_running_average=False, momentum=0.8, axis=axis, variance=variance)
    ref = nn.BatchNorm(use_running_average=False, momentum=0.8, axis=axis, use_fast_variance=fast)
    v_ours = jax.jit(ours.init)(jax.random.key(0), x)
    v_ref = jax.jit(ref.init)(jax.random.key(0), x)
    assert jax.tree.structure(v_ours) == jax.tree.structure(v_ref)
    params = {"scale": jnp.asarray(rng.uniform(0.5, 1.5, shape[axis]), jnp.float32),
              "bias": jnp.asarray(rng.normal(size=shape[axis]), jnp.float32)}
    dy = jnp.asarray(rng.normal(size=shape).astype(np.float32))

    def run(module, variables, x, p):
        y, upd = module.apply({"params": p, "batch_stats": variables["batch_stats"]}, x, mutable=["batch_stats"])
        return y, upd["batch_stats"]

    y1, s1 = jax.jit(lambda x, p: run(ours, v_ours, x, p))(x, params)  # jitted: one program, as in training
    y2, s2 = jax.jit(lambda x, p: run(ref, v_ref, x, p))(x, params)
    np.testing.assert_allclose(y1, y2, atol=1e-5)
    for k in ("mean", "var"):
        np.testing.assert_allclose(s1[k], s2[k], atol=1e-5)

    def loss(module, variables):
        return lambda x, p: jnp.sum(run(module, variables, x, p)[0] * dy)

    g1 = jax.jit(jax.grad(loss(ours, v_ours), argnums=(0, 1)))(x, params)
    g2 = jax.jit(jax.grad(loss(ref, v_ref), argnums=(0, 1)))(x, params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), g1, g2)


def test_gradients_numerical_and_closed_form():
    rng = np.random.default_rng(2)
    m, f = 12, 4
    x = rng.normal(0.5, 1.5, (m, f))
    gamma = rng.uniform(0.5, 2.0, f)
    beta = rng.normal(size=f)
    dy = rng.normal(size=(m, f))
    bn = BatchNorm(use_running_average=False)
    variables = bn.init(jax.random.key(0), jnp.float32(x))

    def f_out(x, g, b):
        v = {"params": {"scale": g, "bias": b}, "batch_stats": variables["batch_stats"]}
        return _train_apply(bn, v, x)[0]

    with jax.enable_x64():
        check_grads(f_out, (jnp.asarray(x), jnp.asarray(gamma), jnp.asarray(beta)), order=1, modes=["rev"],
                    atol=1e-6, rtol=1e-6)
        _, vjp = jax.vjp(f_out, jnp.asarray(x), jnp.asarray(gamma), jnp.asarray(beta))
        dx, dgamma, dbeta = vjp(jnp.asarray(dy))
    # Backward pass of section 3 of the BN paper (chain rule written out).
    mu = x.mean(0)
    var = x.var(0)
    xhat = (x - mu) / np.sqrt(var + EPS)
    dxhat = dy * gamma
    dvar = np.sum(dxhat * (x - mu) * -0.5 * (var + EPS) ** -1.5, 0)
    dmu = np.sum(-dxhat / np.sqrt(var + EPS), 0) + dvar * np.mean(-2 * (x - mu), 0)
    dx_ref = dxhat / np.sqrt(var + EPS) + dvar * 2 * (x - mu) / m + dmu / m
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(dgamma, np.sum(dy * xhat, 0), rtol=1e-8)
    np.testing.assert_allclose(dbeta, dy.sum(0), rtol=1e-8)


def test_eval_uses_running_stats_and_does_not_change_them():
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.normal(size=(10, 3)).astype(np.float32))
    bn = BatchNorm()
    variables = bn.init(jax.random.key(0), x, use_running_average=True)
    stats = {"mean": jnp.array([1.0, -2.0, 0.5]), "var": jnp.array([4.0, 0.25, 1.0])}
    variables = {"params": variables["params"], "batch_stats": stats}
    y, upd = bn.apply(variables, x, use_running_average=True, mutable=["batch_stats"])
    np.testing.assert_allclose(y, (x - stats["mean"]) / np.sqrt(stats["var"] + EPS), rtol=1e-5, atol=1e-6)
    jax.tree.map(np.testing.assert_array_equal, upd["batch_stats"], stats)


def test_init_does_not_update_stats():
    x = jnp.full((8, 3), 5.0) + jnp.arange(8.0)[:, None]
    v = BatchNorm(use_running_average=False).init(jax.random.key(0), x)
    np.testing.assert_array_equal(v["batch_stats"]["mean"], np.zeros(3))
    np.testing.assert_array_equal(v["batch_stats"]["var"], np.ones(3))


def test_two_pass_stays_accurate_where_one_pass_does_not():
    rng = np.random.default_rng(4)
    x = (1e4 + rng.normal(size=(4096, 2))).astype(np.float32)
    true_var = x.astype(np.float64).var(0)
    _, v2, _ = batch_moments(jnp.asarray(x), (0,), algorithm="two_pass")
    _, v1, _ = batch_moments(jnp.asarray(x), (0,), algorithm="one_pass")
    assert np.max(np.abs(np.asarray(v2) / true_var - 1)) < 1e-3
    assert np.max(np.abs(np.asarray(v1) / true_var - 1)) > 0.1


def test_low_precision_input_uses_float32_statistics():
    rng = np.random.default_rng(5)
    x = rng.normal(3.0, 2.0, (64, 4)).astype(np.float32)
    bn = BatchNorm(use_running_average=False, momentum=0.0)
    v = bn.init(jax.random.key(0), jnp.asarray(x, jnp.bfloat16))
    y, upd = bn.apply(v, jnp.asarray(x, jnp.bfloat16), mutable=["batch_stats"])
    assert upd["batch_stats"]["mean"].dtype == jnp.float32
    xb = np.asarray(jnp.asarray(x, jnp.bfloat16).astype(jnp.float32), np.float64)
    np.testing.assert_allclose(upd["batch_stats"]["var"], xb.var(0), rtol=1e-5)
    assert y.dtype == jnp.float32  # params are float32: result promotes like flax
    y16 = BatchNorm(use_running_average=False, dtype=jnp.bfloat16).apply(v, jnp.asarray(x, jnp.bfloat16),
                                                                         mutable=["batch_stats"])[0]
    assert y16.dtype == jnp.bfloat16


def test_unbiased_running_variance_and_torch_momentum():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(5, 2)).astype(np.float32)
    m_torch = 0.1
    bn = BatchNorm(use_running_average=False, momentum=torch_momentum_to_flax(m_torch), running_var="unbiased")
    v = jax.jit(bn.init)(jax.random.key(0), x)
    _, upd = _train_apply(bn, v, x)
    # PyTorch: running_var = (1 - m) * running_var + m * unbiased batch variance
    np.testing.assert_allclose(upd["batch_stats"]["var"], 0.9 * 1.0 + 0.1 * x.var(0, ddof=1), rtol=1e-5)
    np.testing.assert_allclose(upd["batch_stats"]["mean"], 0.1 * x.mean(0), rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="momentum"):
        torch_momentum_to_flax(1.5)


def test_masked_statistics_equal_statistics_of_the_kept_rows():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(10, 3)).astype(np.float32)
    keep = np.arange(10) < 6
    mean, var, count = batch_moments(jnp.asarray(x), (0,), mask=jnp.asarray(keep)[:, None])
    np.testing.assert_allclose(mean, x[keep].mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(var, x[keep].var(0), rtol=1e-5)
    assert float(count) == 6


def test_bad_inputs_raise_clear_errors():
    bn = BatchNorm(use_running_average=False)
    with pytest.raises(ValueError, match="more than one value per feature"):
        bn.init_with_output(jax.random.key(0), jnp.ones((1, 4)))
    with pytest.raises(ValueError, match="axis 3 does not exist"):
        BatchNorm(use_running_average=False, axis=3).init(jax.random.key(0), jnp.ones((4, 4)))
    with pytest.raises(TypeError, match="floating-point"):
        bn.init(jax.random.key(0), jnp.ones((4, 4), jnp.int32))
    with pytest.raises(ValueError, match="divide the batch"):
        BatchNorm(use_running_average=False, virtual_batch_size=3).init(jax.random.key(0), jnp.ones((8, 2)))


class _Net(nn.Module):
    norm: type

    @nn.compact
    def __call__(self, x, train):
        x = nn.Dense(6, use_bias=False)(x)
        x = self.norm(use_running_average=not train, momentum=0.9)(x)
        return nn.Dense(3)(nn.relu(x))


def test_drop_in_replacement_in_a_model():
    rng = np.random.default_rng(8)
    x = jnp.asarray(rng.normal(size=(16, 5)).astype(np.float32))
    ours = _Net(BatchNorm)
    ref = _Net(lambda **kw: nn.BatchNorm(use_fast_variance=False, **kw))
    v = jax.jit(ours.init, static_argnums=2)(jax.random.key(1), x, False)
    v2 = jax.jit(ref.init, static_argnums=2)(jax.random.key(1), x, False)
    jax.tree.map(np.testing.assert_array_equal, v, v2)
    (y1, u1), (y2, u2) = (m.apply(v, x, True, mutable=["batch_stats"]) for m in (ours, ref))
    np.testing.assert_allclose(y1, y2, atol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), u1, u2)
    np.testing.assert_allclose(ours.apply(v, x, False), ref.apply(v, x, False), atol=1e-5)


def test_population_statistics_is_algorithm2():
    rng = np.random.default_rng(9)
    batches = [jnp.asarray(rng.normal(2.0, 3.0, (20, 4)).astype(np.float32)) for _ in range(5)]
    net = _Net(BatchNorm)
    v = net.init(jax.random.key(0), batches[0], False)

    @jax.jit  # one program per batch shape, as the library's population pass runs it
    def moments(xb):
        return net.apply(v, xb, True, mutable=["batch_stats", MOMENTS_COLLECTION])[1][MOMENTS_COLLECTION]

    stats = population_statistics(moments, v["batch_stats"], batches)
    w = np.asarray(v["params"]["Dense_0"]["kernel"], np.float64)
    hs = [np.asarray(b, np.float64) @ w for b in batches]
    m = 20
    np.testing.assert_allclose(stats["BatchNorm_0"]["mean"], np.mean([h.mean(0) for h in hs], 0), rtol=1e-5)
    np.testing.assert_allclose(stats["BatchNorm_0"]["var"], m / (m - 1) * np.mean([h.var(0) for h in hs], 0),
                               rtol=1e-5)


@pytest.mark.parametrize("shape,axis,variance", [((16, 5), -1, "two_pass"), ((4, 6, 6, 3), -1, "one_pass"),
                                                 ((4, 3, 5, 2), (1, 3), "two_pass")])
def test_closed_form_backward_equals_autodiff_and_forward_mode_needs_the_flag(shape, axis, variance):
    """BatchNorm's custom VJP (closed_form_grad=True) == autodiff of the forward pass, for
    x, gamma, beta and for losses that also use the batch statistics (running averages)."""
    x = jax.random.normal(jax.random.key(0), shape) * 3 + 1
    w = jax.random.normal(jax.random.key(1), shape)
    grads = []
    for closed in (True, False):
        bn = BatchNorm(use_running_average=False, axis=axis, variance=variance, closed_form_grad=closed,
                       momentum=0.5)
        v = jax.jit(bn.init)(jax.random.key(2), x)
        v = {"params": jax.tree.map(lambda p: p + 0.3, v["params"]), "batch_stats": v["batch_stats"]}

        def loss(x, params, bn=bn, v=v):
            y, upd = bn.apply({"params": params, "batch_stats": v["batch_stats"]}, x, mutable=["batch_stats"])
            return jnp.sum(y * w) + jnp.sum(upd["batch_stats"]["mean"] ** 2) + jnp.sum(upd["batch_stats"]["var"])

        grads.append(jax.jit(jax.grad(loss, argnums=(0, 1)))(x, v["params"]))  # one program each
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4), grads[0], grads[1])
    bn = BatchNorm(use_running_average=False, axis=axis, closed_form_grad=False)
    v = jax.jit(bn.init)(jax.random.key(2), x)
    jax.jit(lambda x, w: jax.jvp(lambda x: _train_apply(bn, v, x)[0], (x,), (w,)))(x, w)  # works
    with pytest.raises(TypeError):
        bn = BatchNorm(use_running_average=False, axis=axis)
        jax.jit(lambda x, w: jax.jvp(lambda x: _train_apply(bn, v, x)[0], (x,), (w,)))(x, w)


def test_unbiased_running_variance_and_algorithm2_on_images_use_m_equal_n_h_w():
    """On NHWC input a feature's batch has m = N*H*W values: the unbiased running variance
    and Algorithm 2 use m / (m - 1) with that m (code using N would pass 2-D tests only)."""
    rng = np.random.default_rng(11)
    x = rng.normal(1.0, 2.0, (3, 4, 5, 2)).astype(np.float32)
    m = 3 * 4 * 5
    bn = BatchNorm(use_running_average=False, momentum=0.0, running_var="unbiased")  # running = this batch's
    v = jax.jit(bn.init)(jax.random.key(0), x)
    upd = _train_apply(bn, v, x)[1]["batch_stats"]
    x64 = x.astype(np.float64).reshape(-1, 2)
    np.testing.assert_allclose(upd["var"], x64.var(0) * m / (m - 1), rtol=1e-5)
    batches = [jnp.asarray(rng.normal(0.5, 1.5, (3, 4, 5, 2)).astype(np.float32)) for _ in range(4)]
    bn2 = BatchNorm(use_running_average=False)
    v2 = jax.jit(bn2.init)(jax.random.key(0), batches[0])
    stats = population_statistics(
        jax.jit(lambda xb: bn2.apply(v2, xb, mutable=["batch_stats", MOMENTS_COLLECTION])[1][MOMENTS_COLLECTION]),
        v2["batch_stats"], batches)
    flat = [np.asarray(b, np.float64).reshape(-1, 2) for b in batches]
    np.testing.assert_allclose(stats["mean"], np.mean([f.mean(0) for f in flat], 0), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(stats["var"], m / (m - 1) * np.mean([f.var(0) for f in flat], 0), rtol=1e-5)


@pytest.mark.parametrize("use_scale,use_bias,dtype", [(False, True, jnp.float32), (True, False, jnp.float32),
                                                      (False, False, jnp.float32), (True, True, jnp.bfloat16)])
def test_closed_form_backward_without_scale_or_bias_and_in_bfloat16_against_float64(use_scale, use_bias, dtype):
    """Gradient of sum(BN(x) * w) from the custom VJP against the BN paper's backward in
    float64 numpy (section 3: dL/dx = gamma / sigma * (g - mean(g) - xhat * mean(g * xhat)))."""
    rng = np.random.default_rng(12)
    x64 = rng.normal(2.0, 3.0, (16, 6))
    w64 = rng.normal(size=(16, 6))
    bn = BatchNorm(use_running_average=False, use_scale=use_scale, use_bias=use_bias,
                   scale_init=lambda k, s, d=jnp.float32: jnp.full(s, 1.7, d))
    v = bn.init(jax.random.key(0), jnp.asarray(x64, dtype))
    gx = jax.grad(lambda x: jnp.sum(_train_apply(bn, v, x)[0].astype(jnp.float32)
                                    * jnp.asarray(w64, jnp.float32)))(jnp.asarray(x64, dtype))
    xin = np.asarray(jnp.asarray(x64, dtype).astype(jnp.float32), np.float64)  # what the layer saw
    mu, var = xin.mean(0), xin.var(0)
    xhat = (xin - mu) / np.sqrt(var + EPS)
    gamma = 1.7 if use_scale else 1.0
    want = gamma / np.sqrt(var + EPS) * (w64 - w64.mean(0) - xhat * (w64 * xhat).mean(0))
    tol = 2e-2 if dtype == jnp.bfloat16 else 1e-5  # bf16: the gradient itself is rounded to 8 bits
    np.testing.assert_allclose(np.asarray(gx, np.float64), want, rtol=tol, atol=tol * np.abs(want).max())


def test_ghost_bn_running_statistics_average_the_virtual_batches():
    rng = np.random.default_rng(13)
    x = rng.normal(1.0, 2.0, (12, 3)).astype(np.float32)
    bn = BatchNorm(use_running_average=False, virtual_batch_size=4, momentum=0.75)
    v = jax.jit(bn.init)(jax.random.key(0), x)
    upd = _train_apply(bn, v, x)[1]["batch_stats"]
    groups = x.astype(np.float64).reshape(3, 4, 3)
    np.testing.assert_allclose(upd["mean"], 0.25 * groups.mean(1).mean(0), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(upd["var"], 0.75 * 1.0 + 0.25 * groups.var(1).mean(0), rtol=1e-5)


def test_batch_renorm_in_inference_mode_uses_the_moving_averages():
    from bnjax import BatchRenorm

    rng = np.random.default_rng(14)
    x = rng.normal(size=(10, 4)).astype(np.float32)
    rn = BatchRenorm(use_running_average=True)
    v = jax.jit(rn.init)(jax.random.key(0), x)
    mean, var = rng.normal(size=4).astype(np.float32), rng.uniform(0.5, 2.0, 4).astype(np.float32)
    gamma, beta = rng.normal(size=4).astype(np.float32), rng.normal(size=4).astype(np.float32)
    v = {"params": {"scale": gamma, "bias": beta}, "batch_stats": {**v["batch_stats"], "mean": mean, "var": var}}
    y = rn.apply(v, x)
    want = gamma * (x.astype(np.float64) - mean) / np.sqrt(var.astype(np.float64) + EPS) + beta
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-6)


def test_training_with_a_mask_uses_only_the_kept_rows_for_output_and_running_statistics():
    rng = np.random.default_rng(15)
    x = rng.normal(1.0, 2.0, (10, 3)).astype(np.float32)
    keep = np.arange(10) % 3 != 0  # 6 of 10 rows
    bn = BatchNorm(use_running_average=False, momentum=0.5, running_var="unbiased")
    v = jax.jit(bn.init)(jax.random.key(0), x)
    y, upd = bn.apply(v, x, mask=jnp.asarray(keep)[:, None], mutable=["batch_stats"])
    want, mu, var = np_bn_train(x[keep], 1.0, 0.0)
    np.testing.assert_allclose(np.asarray(y)[keep], want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(upd["batch_stats"]["mean"], 0.5 * mu, rtol=1e-5, atol=1e-6)
    m = keep.sum()
    np.testing.assert_allclose(upd["batch_stats"]["var"], 0.5 + 0.5 * var * m / (m - 1), rtol=1e-5)


def test_a_mask_keeping_different_counts_per_feature_uses_each_features_own_rows():
    rng = np.random.default_rng(16)
    x = rng.normal(size=(12, 3)).astype(np.float32)
    keep = np.stack([np.arange(12) < 4, np.arange(12) < 9, np.arange(12) >= 2], axis=1)  # 4, 9, 10 rows
    mean, var, count = batch_moments(jnp.asarray(x), (0,), mask=jnp.asarray(keep))
    for f in range(3):
        np.testing.assert_allclose(mean[f], x[keep[:, f], f].mean(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(var[f], x[keep[:, f], f].var(), rtol=1e-5)
    assert float(count) == 4  # the smallest m: the unbiased correction never under-corrects a feature


@pytest.mark.parametrize("variance", ["two_pass", "one_pass"])
def test_ghost_bn_normalises_each_virtual_batch_and_corrects_with_its_own_m(variance):
    rng = np.random.default_rng(17)
    x = rng.normal(1.0, 2.0, (12, 3)).astype(np.float32)
    bn = BatchNorm(use_running_average=False, virtual_batch_size=4, momentum=0.0, running_var="unbiased",
                   variance=variance)
    v = jax.jit(bn.init)(jax.random.key(0), x)
    y, upd = _train_apply(bn, v, x)
    groups = x.reshape(3, 4, 3)
    want = np.concatenate([np_bn_train(g, 1.0, 0.0)[0] for g in groups])
    np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(upd["batch_stats"]["var"], groups.astype(np.float64).var(1).mean(0) * 4 / 3,
                               rtol=1e-4)


def test_degenerate_settings_are_refused():
    x = jnp.ones((8, 2))
    with pytest.raises(ValueError, match="must be >= 2"):  # one example per virtual batch: output would be beta
        BatchNorm(use_running_average=False, virtual_batch_size=1).init(jax.random.key(0), x)
    for axis in (2, -3):  # one past either end must not wrap around to another axis
        with pytest.raises(ValueError, match=f"axis {axis} does not exist"):
            BatchNorm(use_running_average=False, axis=axis).init(jax.random.key(0), x)
    end = "(?:\n|$)"  # the whole message (JAX may append a note on its traceback after it)
    ghost0 = "^Ghost BN splits axis 0 into virtual batches; it cannot be a feature axis"
    with pytest.raises(ValueError, match=ghost0 + end):
        BatchNorm(use_running_average=False, axis=0, virtual_batch_size=2).init(jax.random.key(0), x)
    with pytest.raises(ValueError, match="^Ghost BN does not support mask" + end):
        BatchNorm(use_running_average=False, virtual_batch_size=2).init(jax.random.key(0), x, mask=x > 0)
    with pytest.raises(ValueError, match="^population_statistics needs at least one batch" + end):
        population_statistics(lambda b: b, {}, [])
    indivisible = f"^virtual_batch_size=3 must be >= 2 and divide the batch size {x.shape[0]}"
    with pytest.raises(ValueError, match=indivisible + end):
        BatchNorm(use_running_average=False, virtual_batch_size=3).init(jax.random.key(0), x)


def test_population_statistics_keep_batch_renorms_other_statistics():
    from bnjax import BatchRenorm

    rng = np.random.default_rng(18)
    batches = [jnp.asarray(rng.normal(size=(16, 4)).astype(np.float32)) for _ in range(3)]
    rn = BatchRenorm(use_running_average=False)
    v = jax.jit(rn.init)(jax.random.key(0), batches[0])
    extra = sorted(set(v["batch_stats"]) - {"mean", "var"})
    assert extra  # Batch Renorm keeps more than the two moments (its step counter)
    v = {**v, "batch_stats": {**v["batch_stats"], **{k: v["batch_stats"][k] + 7 for k in extra}}}

    @jax.jit  # one program per batch shape, as the library's population pass runs it
    def moments(xb):
        return rn.apply(v, xb, mutable=["batch_stats", MOMENTS_COLLECTION])[1][MOMENTS_COLLECTION]

    stats = population_statistics(moments, v["batch_stats"], batches)
    for k in extra:
        np.testing.assert_array_equal(stats[k], v["batch_stats"][k])
    np.testing.assert_allclose(stats["mean"], np.mean([np.asarray(b).mean(0) for b in batches], 0), rtol=1e-5,
                               atol=1e-6)


def test_torch_momentum_maps_its_whole_range():
    assert torch_momentum_to_flax(0.0) == 1.0 and torch_momentum_to_flax(1.0) == 0.0
    assert torch_momentum_to_flax(0.1) == pytest.approx(0.9)
    for bad in (-0.1, 1.1):
        with pytest.raises(ValueError):
            torch_momentum_to_flax(bad)


def test_ghost_bn_on_images_with_gamma_and_beta_equals_numpy_per_virtual_batch():
    """NHWC input, 2 virtual batches of 3: each normalised over (its examples, H, W) per
    channel, then scaled by gamma and shifted by beta (non-trivial values set here)."""
    rng = np.random.default_rng(11)
    x = rng.normal(1.0, 2.0, (6, 4, 5, 3)).astype(np.float32)
    bn = BatchNorm(use_running_average=False, virtual_batch_size=3)
    v = jax.jit(bn.init)(jax.random.key(0), x)
    gamma, beta = np.array([0.5, 2.0, -1.0], np.float32), np.array([0.1, -0.2, 0.3], np.float32)
    v = {**v, "params": {"scale": jnp.asarray(gamma), "bias": jnp.asarray(beta)}}
    y, _ = _train_apply(bn, v, x)
    want = np.concatenate([(g - g.mean((0, 1, 2))) / np.sqrt(g.var((0, 1, 2)) + 1e-5) * gamma + beta
                           for g in (x[:3].astype(np.float64), x[3:].astype(np.float64))])
    np.testing.assert_allclose(y, want, atol=2e-5)


def test_one_pass_variance_is_what_training_and_its_gradient_use():
    """Far from zero (|mean| / std = 1e4 in float32) E[x^2] - E[x]^2 loses the variance
    two passes keep: the one-pass choice must reach the training forward pass under a
    gradient and Ghost BN's virtual batches, not only the plain forward pass."""
    rng = np.random.default_rng(12)
    x = jnp.asarray((1e4 + rng.normal(0, 1, (8, 3))).astype(np.float32))
    outs = {}
    for variance in ("two_pass", "one_pass"):
        for vbs in (None, 4):
            bn = BatchNorm(use_running_average=False, variance=variance, virtual_batch_size=vbs)
            v = jax.jit(bn.init)(jax.random.key(0), x)
            plain = _train_apply(bn, v, x)[0]
            (_, y), _ = jax.value_and_grad(
                lambda p: (lambda y: (jnp.sum(y ** 2), y))(bn.apply({**v, "params": p}, x, mutable=["batch_stats"])[0]),
                has_aux=True)(v["params"])
            np.testing.assert_allclose(y, plain, atol=1e-6)  # the gradient's forward pass is the plain one
            outs[variance, vbs] = np.asarray(plain)
    for vbs in (None, 4):
        assert np.max(np.abs(outs["one_pass", vbs] - outs["two_pass", vbs])) > 0.1


def test_unbiased_population_variance_of_batches_of_two():
    """m = 2: Var[x] = 2 / (2 - 1) * E_B[sigma_B^2] (the m / (m - 1) correction at its largest)."""
    batches = [jnp.asarray([[1.0, -2.0], [3.0, 4.0]]), jnp.asarray([[0.0, 1.0], [2.0, 1.0]])]
    bn = BatchNorm(use_running_average=False)
    v = jax.jit(bn.init)(jax.random.key(0), batches[0])
    stats = population_statistics(
        jax.jit(lambda b: bn.apply(v, b, mutable=["batch_stats", MOMENTS_COLLECTION])[1][MOMENTS_COLLECTION]),
        v["batch_stats"], batches)
    np.testing.assert_allclose(stats["mean"], [1.5, 1.0], atol=1e-6)
    np.testing.assert_allclose(stats["var"], [2 * np.mean([1.0, 1.0]), 2 * np.mean([9.0, 0.0])], atol=1e-5)
