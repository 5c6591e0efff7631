"""On-device augmentation: geometry against numpy, per-image randomness, statistics."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from bnjax import augment as A
from bnjax import fit
from bnjax.config import DataConfig, ModelConfig, TrainConfig

IMGS = jax.random.uniform(jax.random.key(0), (6, 9, 9, 2))
# jitted, the pipeline static, as the train step runs them: one program per call instead of one per operation
augment = jax.jit(A.augment, static_argnums=2)
apply = jax.jit(A.apply, static_argnums=1)
sample = jax.jit(A.sample, static_argnums=(1, 2))
rotate = jax.jit(A.rotate, static_argnames="fill")


def _always(spec):
    return A.parse_pipeline(spec)


def test_flip_twice_is_identity_and_flip_is_mirror():
    for op, axis in (("hflip@1", 2), ("vflip@1", 1)):
        pipe = _always(op)
        once = augment(jax.random.key(1), IMGS, pipe)
        np.testing.assert_array_equal(once, np.flip(IMGS, axis))
        np.testing.assert_array_equal(augment(jax.random.key(2), once, pipe), IMGS)


def test_rotation_by_zero_is_identity_and_90_is_rot90_counter_clockwise():
    pipe = _always("rotate:90:interp=nearest")
    zero = ({"apply": jnp.ones(6, bool), "value": jnp.zeros(6)},)
    np.testing.assert_array_equal(apply(IMGS, pipe, zero), IMGS)
    ninety = ({"apply": jnp.ones(6, bool), "value": jnp.full(6, 90.0)},)
    np.testing.assert_array_equal(apply(IMGS, pipe, ninety), np.rot90(IMGS, 1, axes=(1, 2)))
    # counter-clockwise: the top-right corner moves to the top-left
    img = np.zeros((1, 5, 5)); img[0, 0, 4] = 1
    out = apply(jnp.asarray(img), pipe, ({"apply": jnp.ones(1, bool), "value": jnp.full(1, 90.0)},))
    assert out[0, 0, 0] == 1 and out.shape == img.shape


def test_translate_matches_shifted_numpy():
    pipe = _always("translate:2:fill=0")
    shifts = jnp.array([[1, -2], [0, 0], [-2, 1], [2, 2], [0, 1], [-1, 0]])
    out = np.asarray(apply(IMGS, pipe, ({"apply": jnp.ones(6, bool), "value": shifts},)))
    for i, (dy, dx) in enumerate(np.asarray(shifts)):
        ref = np.zeros_like(IMGS[i])
        src = np.asarray(IMGS[i])
        ref[max(dy, 0):9 + min(dy, 0), max(dx, 0):9 + min(dx, 0)] = src[max(-dy, 0):9 - max(dy, 0),
                                                                        max(-dx, 0):9 - max(dx, 0)]
        np.testing.assert_array_equal(out[i], ref)


def test_shape_dtype_kept_and_same_key_same_result():
    pipe = A.parse_pipeline("hflip,vflip,rotate:20,translate:1")
    for x in (IMGS, IMGS[..., 0], IMGS.astype(jnp.bfloat16)):
        a = augment(jax.random.key(3), x, pipe)
        assert a.shape == x.shape and a.dtype == x.dtype
        np.testing.assert_array_equal(a, augment(jax.random.key(3), x, pipe))


def test_identical_images_get_different_transforms():
    batch = jnp.broadcast_to(IMGS[:1], (32, 9, 9, 2))
    out = np.asarray(augment(jax.random.key(4), batch, A.parse_pipeline("rotate:30")))
    assert len({out[i].tobytes() for i in range(32)}) == 32


def test_angles_cover_the_range_uniformly_when_p_below_one():
    """augmax's Rotate(p<1) draws coin and angle from one key, so applied angles cover only
    part of the range; here they must be U(-30, 30) and the applied fraction close to p."""
    n = 20000
    (prm,) = sample(jax.random.key(5), A.parse_pipeline("rotate:30@0.3"), n)
    applied = np.asarray(prm["apply"])
    angles = np.asarray(prm["value"])[applied]
    assert abs(applied.mean() - 0.3) < 0.015
    assert stats.kstest(angles, stats.uniform(loc=-30, scale=60).cdf).pvalue > 1e-3
    # and the whole batch's transformed images match the sampled parameters (replay)
    imgs = jnp.broadcast_to(IMGS[:1, ..., :1], (64, 9, 9, 1))
    pipe = A.parse_pipeline("rotate:30@0.3")
    params = sample(jax.random.key(6), pipe, 64)
    np.testing.assert_array_equal(apply(imgs, pipe, params), augment(jax.random.key(6), imgs, pipe))


@pytest.mark.parametrize("spec,needle", [
    ("spin", "unknown augmentation op 'spin'"),
    ("hflip@-0.1", "probability of 'hflip'"),
    ("rotate", "needs a positive amount"),
    ("rotate:10:wobble=1", "unknown option 'wobble'"),
])
def test_bad_specs_name_the_problem(spec, needle):
    with pytest.raises(ValueError, match=needle):
        A.parse_pipeline(spec)


def test_pipeline_runs_inside_the_jitted_scanned_train_step():
    cfg = TrainConfig(model=ModelConfig(arch="convnet", channels=(8, 8), dense=32, norm="batch"),
                      data=DataConfig(source="digits", batch_size=32, augment="hflip,rotate:15:fill=edge"),
                      steps=6, eval_every=3)
    res = fit(cfg, progress=False)
    assert res.summary["diverged_at"] is None and int(res.state.step) == 6
    plain = fit(dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, augment="")), progress=False)
    assert not np.array_equal(res.state.params["head"]["kernel"], plain.state.params["head"]["kernel"])


@pytest.mark.parametrize("fill,mode", [("edge", "nearest"), (0.0, "grid-constant"), (0.5, "grid-constant")])
def test_rotation_matches_scipy(fill, mode):
    from scipy import ndimage

    rng = np.random.default_rng(0)
    x = rng.random((4, 11, 9, 1)).astype(np.float32)
    deg = np.array([17.0, -33.0, 90.0, 5.0], np.float32)
    ours = np.asarray(rotate(jnp.asarray(x), jnp.asarray(deg), fill=fill))[..., 0]
    ref = np.stack([ndimage.rotate(x[i, ..., 0].astype(np.float64), deg[i], reshape=False, order=1, mode=mode,
                                   cval=fill if mode != "nearest" else 0.0) for i in range(4)])
    np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_rotation_matches_dm_pix_edge_mode():
    import dm_pix as pix

    x = jax.random.uniform(jax.random.key(0), (16, 28, 28, 1))
    deg = jax.random.uniform(jax.random.key(1), (16,), minval=-45, maxval=45)
    ref = jax.jit(jax.vmap(lambda im, d: pix.rotate(im, jnp.deg2rad(d), order=1, mode="nearest")))(x, deg)
    np.testing.assert_allclose(jax.jit(A.rotate)(x, deg), ref, atol=1e-5)  # jitted: one program each
