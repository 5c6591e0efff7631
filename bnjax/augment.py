"""On-device data augmentation with per-image randomness (jit / vmap / scan safe).

A pipeline is a tuple of frozen `Op`s, parsed from a spec such as
``"hflip,vflip@0.2,rotate:15:p=0.5:interp=nearest:fill=edge,translate:2"``:

* ``hflip`` / ``vflip`` — mirror left-right / top-bottom (default p = 0.5);
* ``rotate:DEG`` — rotate by an angle drawn uniformly from [-DEG, DEG] degrees,
  counter-clockwise positive as in torchvision (default p = 1);
* ``translate:PIX`` — pad by PIX and crop back at a random offset, i.e. a shift by up
  to PIX pixels in each direction (default p = 1).

Options: ``p=`` (or ``@P``) probability; for rotate/translate ``fill=`` ``edge``
(default: replicate the border, which for digits is the background) or a constant in the
units of the (standardised) images; for rotate ``interp=bilinear|nearest``.

Randomness: `sample` draws, for every image and every op, its own apply/skip coin and
its own parameter from *separate* keys (the coin never decides the angle, unlike
augmax's ``Rotate(p<1)``), and `apply` is deterministic given those parameters, so a
batch can be replayed. Rotation is a batched gather (see `rotate` for why not dm-pix);
its results equal scipy.ndimage.rotate and dm-pix (tests).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp

Array = jax.Array
OPS = ("hflip", "vflip", "rotate", "translate")
_DEFAULT_P = {"hflip": 0.5, "vflip": 0.5, "rotate": 1.0, "translate": 1.0}


@dataclass(frozen=True)
class Op:
    """One augmentation. ``amount``: degrees for rotate, pixels for translate."""

    name: str
    p: float
    amount: float = 0.0
    interp: str = "bilinear"
    fill: float | str = "edge"


Pipeline = tuple[Op, ...]


def parse_pipeline(spec: str) -> Pipeline:
    """Parse a pipeline spec (see module docstring); ``""`` or ``"none"`` is empty.

    Raises:
      ValueError: naming the offending op or option.
    """
    spec = spec.strip()
    if spec in ("", "none"):
        return ()
    ops = []
    for raw in spec.split(","):
        part = raw.strip()
        prob = None
        if "@" in part:
            part, _, ptxt = part.partition("@")
            prob = _number(raw, "p", ptxt)
        name, *args = part.split(":")
        if name not in OPS:
            raise ValueError(f"unknown augmentation op {name!r} in {raw!r}; choose from {OPS}")
        amount, interp, fill = 0.0, "bilinear", "edge"
        for arg in args:
            key, eq, val = arg.partition("=")
            if not eq:
                if name not in ("rotate", "translate"):
                    raise ValueError(f"op {name!r} takes no amount (got {arg!r} in {raw!r})")
                amount = _number(raw, "amount", key)
            elif key == "p":
                prob = _number(raw, "p", val)
            elif key == "interp" and name == "rotate":
                if val not in ("bilinear", "nearest"):
                    raise ValueError(f"interp must be bilinear or nearest in {raw!r}")
                interp = val
            elif key == "fill" and name in ("rotate", "translate"):
                fill = "edge" if val == "edge" else _number(raw, "fill", val)
            else:
                raise ValueError(f"unknown option {key!r} for op {name!r} in {raw!r}")
        if name in ("rotate", "translate") and amount <= 0:
            raise ValueError(f"op {name!r} needs a positive amount, e.g. '{name}:15' (got {raw!r})")
        if name == "translate" and not float(amount).is_integer():
            raise ValueError(f"translate needs a whole number of pixels (got {raw!r})")
        prob = _DEFAULT_P[name] if prob is None else prob
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"probability of {name!r} must be in [0, 1], got {prob} in {raw!r}")
        ops.append(Op(name, prob, amount, interp, fill))
    return tuple(ops)


def _number(raw: str, what: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"cannot read {what} {text!r} in augmentation {raw!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"{what} must be finite in augmentation {raw!r}")
    return value


def sample(key: Array, pipeline: Pipeline, batch: int) -> tuple[dict, ...]:
    """Draw per-image parameters: for op i, ``{"apply": (batch,) bool, "value": ...}``
    where value is the angle in degrees (rotate) or the (dy, dx) shift (translate).
    Each op uses its own key, split into independent coin and parameter keys."""
    out = []
    for i, op in enumerate(pipeline):
        k_coin, k_val = jax.random.split(jax.random.fold_in(key, i))
        apply = jax.random.bernoulli(k_coin, op.p, (batch,))
        if op.name == "rotate":
            value = jax.random.uniform(k_val, (batch,), minval=-op.amount, maxval=op.amount)
        elif op.name == "translate":
            a = int(op.amount)
            value = jax.random.randint(k_val, (batch, 2), -a, a + 1)
        else:
            value = jnp.zeros((batch,))
        out.append({"apply": apply, "value": value})
    return tuple(out)


def apply(images: Array, pipeline: Pipeline, params: tuple[dict, ...]) -> Array:
    """Apply a pipeline with given per-image parameters (deterministic).

    Args:
      images: (N, H, W) or (N, H, W, C).
      pipeline: parsed ops.
      params: from `sample`.
    Returns:
      Augmented images, same shape and dtype.
    """
    squeeze = images.ndim == 3
    x = images[..., None] if squeeze else images
    for op, prm in zip(pipeline, params, strict=True):
        if op.name == "hflip":
            out = x[:, :, ::-1, :]
        elif op.name == "vflip":
            out = x[:, ::-1, :, :]
        elif op.name == "rotate":
            out = rotate(x, prm["value"], interp=op.interp, fill=op.fill)
        else:
            out = jax.vmap(lambda im, s, op=op: _translate(im, s, op))(x, prm["value"])
        x = jnp.where(prm["apply"][:, None, None, None], out, x).astype(images.dtype)
    return x[..., 0] if squeeze else x


def augment(key: Array, images: Array, pipeline: Pipeline) -> Array:
    """`sample` then `apply`: a random augmentation of a batch, per-image."""
    if not pipeline:
        return images
    return apply(images, pipeline, sample(key, pipeline, images.shape[0]))


def rotate(images: Array, degrees: Array, *, interp: str = "bilinear", fill: float | str = "edge") -> Array:
    """Rotate each image about its centre by its own angle, counter-clockwise positive.

    Output pixel (y, x) samples the input at the inverse rotation of its offset from the
    centre ((H-1)/2, (W-1)/2), with bilinear or nearest interpolation. Outside the image,
    ``fill="edge"`` replicates the border (scipy's mode "nearest"); a number pads with that
    constant before interpolating (scipy's "grid-constant"). Written as one batched gather
    rather than dm-pix's per-image ``map_coordinates`` under vmap, which measured 27x slower
    on XLA:CPU for a batch of 256 28x28 images (and dm-pix's constant mode does not blend
    the border).

    Args:
      images: (N, H, W, C).
      degrees: (N,) angles.
    Returns:
      Rotated images, (N, H, W, C) float.
    """
    n, h, w, c = images.shape
    theta = jnp.deg2rad(degrees).astype(jnp.float32)[:, None, None]
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    yy, xx = jnp.meshgrid(jnp.arange(h) - cy, jnp.arange(w) - cx, indexing="ij")
    cos, sin = jnp.cos(theta), jnp.sin(theta)
    sy = cos * yy + sin * xx + cy
    sx = -sin * yy + cos * xx + cx
    flat = images.reshape(n, h * w, c)

    def gather(iy, ix):
        value = jnp.take_along_axis(
            flat, (jnp.clip(iy, 0, h - 1) * w + jnp.clip(ix, 0, w - 1)).reshape(n, -1, 1), axis=1
        ).reshape(n, h, w, c)
        if fill == "edge":
            return value
        inside = (iy >= 0) & (iy <= h - 1) & (ix >= 0) & (ix <= w - 1)
        return jnp.where(inside[..., None], value, jnp.asarray(fill, value.dtype))

    if interp == "nearest":
        return gather(jnp.round(sy).astype(jnp.int32), jnp.round(sx).astype(jnp.int32))
    y0, x0 = jnp.floor(sy), jnp.floor(sx)
    wy, wx = (sy - y0)[..., None], (sx - x0)[..., None]
    y0, x0 = y0.astype(jnp.int32), x0.astype(jnp.int32)
    return ((1 - wy) * ((1 - wx) * gather(y0, x0) + wx * gather(y0, x0 + 1))
            + wy * ((1 - wx) * gather(y0 + 1, x0) + wx * gather(y0 + 1, x0 + 1)))


def _translate(img: Array, shift: Array, op: Op) -> Array:
    a = int(op.amount)
    pad = ((a, a), (a, a), (0, 0))
    padded = jnp.pad(img, pad, mode="edge") if op.fill == "edge" else jnp.pad(img, pad, constant_values=op.fill)
    h, w, c = img.shape
    return jax.lax.dynamic_slice(padded, (a - shift[0], a - shift[1], 0), (h, w, c))


def demo_rows(key: jax.Array, x: Array, *, degrees: float = 30.0) -> dict[str, Array]:
    """The lecture's augmentation figure as data: ``x`` and its horizontal flip, vertical
    flip and a random rotation in ±``degrees`` (each op applied to every image)."""
    rows = {"original": x}
    for name, spec in (("horizontal flip", "hflip@1"), ("vertical flip", "vflip@1"),
                       (f"rotation ±{degrees:g}°", f"rotate:{degrees:g}")):
        rows[name] = augment(key, x, parse_pipeline(spec))
    return rows
