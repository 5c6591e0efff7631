"""Every speed target of an accelerator in one command: what to run the minutes a GPU is lent.

    python -m experiments.bench.device --out runs/device --data npz:data_local/mnist.npz   # the device has no network
    python -m experiments.bench.device --smoke --out /tmp/dev          # every part, tiny sizes (CI)

On whatever backend JAX finds, side by side in one process, writing DIR/<part>.json and
DIR/RESULTS.md (one table per part):

* speedrun: the MNIST speedrun (experiments/bench/speedrun.py), bnjax's two recipes and,
  with PyTorch installed, PyTorch's published recipe (data resident on the device): mean
  test accuracy over the seeds and median training time;
* mlp: the BN-paper MLP as one lax.scan (us per step), and 8 and 64 seeds in one program
  versus one after another (bnjax.many, vmap);
* convnet: 8 BN ConvNets in one program in each layout ("map", "matmul", "vmap") versus one
  after another, per-model throughput;
* bn_cost: a wide BN ConvNet (conv 64-128, fc 256, batch 256): no BN / two-pass / one-pass
  variance, and its images per second in bfloat16 against PyTorch channels_last with
  bf16 autocast;
* env: backend, device name, versions.

Time budget (full sizes on one H100/H200): the estimate is ~4 minutes, from the CPU times
of --smoke scaled by the FLOPs of the full sizes: compilation dominates (about 20 programs,
~5-10 s each on a GPU: ~2-3 min); the timed work is ~20 s of speedrun training (6 rows x 5
seeds x < 0.5 s), < 10 s for the MLP and ConvNet programs (0.7 GFLOP per ConvNet step of
batch 60 x 8 models x 200 steps x 3 repeats x 4 variants is ~10 TFLOP) and < 10 s for the
wide net (2.4 GFLOP per step x 50 steps x 3 repeats x 5 variants). Nothing was measured on
a GPU yet.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
import traceback

import jax
import numpy as np

from bnjax import data as data_lib
from bnjax import runlog
from bnjax.config import DataConfig, ModelConfig, OptimConfig, TrainConfig
from experiments import _cli
from experiments.bench import bn_cost, mlp, seeds, speedrun, torch_models
from experiments.bench._timing import median_seconds, table

WIDE = ModelConfig(arch="convnet", activation="relu", norm="batch", channels=(64, 128), kernels=(3, 3), dense=256)


@dataclasses.dataclass(frozen=True)
class Sizes:
    seeds: int = 5  # speedrun seeds
    epochs_scale: float = 1.0  # speedrun epochs x this
    mlp_steps: int = 1000
    many_steps: int = 200
    ks: tuple[int, ...] = (8, 64)
    cnn_k: int = 8
    wide_steps: int = 50
    wide_batch: int = 256
    wide: ModelConfig = WIDE  # the bn_cost part's net
    repeats: int = 3


FULL = Sizes()
SMOKE = Sizes(seeds=2, epochs_scale=0.5, mlp_steps=20, many_steps=2, ks=(2,), cnn_k=2, wide_steps=2, wide_batch=32,
              wide=dataclasses.replace(WIDE, channels=(8, 16), dense=32), repeats=1)


def part_speedrun(ds, z: Sizes) -> tuple[dict, list[str]]:
    trainers = []
    for name, r in speedrun.RECIPES.items():
        r = dataclasses.replace(r, epochs=r.epochs * z.epochs_scale)
        trainers.append(("bnjax", name, r, speedrun.bnjax_trainer(ds, r)))
        if torch_models.available() and name == "published":
            trainers.append(("PyTorch", name, r, _torch_speedrun(ds, r)))
    out = [[] for _ in trainers]
    for seed in range(z.seeds):  # interleaved: drift affects every row alike
        for o, (*_, train) in zip(out, trainers, strict=True):
            o.append(train(seed))
    rows = [{"impl": impl, "recipe": name, "describe": r.describe(), "seconds": [t for t, _ in o],
             "accuracy": [a for _, a in o]} for (impl, name, r, _), o in zip(trainers, out, strict=True)]
    ref = next((statistics.median(x["seconds"]) for x in rows if x["impl"] == "PyTorch"), None)
    lines = [[x["impl"], f"{x['recipe']}: {x['describe']}", f"{np.mean(x['accuracy']) * 100:.2f}",
              f"{statistics.median(x['seconds']) * 1e3:.1f}",
              f"{statistics.median(x['seconds']) / ref:.2f}" if ref else "—"] for x in rows]
    return {"rows": rows}, [table(["impl", "recipe", "mean test acc %", "median train ms", "time / PyTorch"], lines)]


def _torch_speedrun(ds, r):
    import torch

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    return speedrun.torch_trainer(ds, r, threads=os.cpu_count() or 1, device=dev)


def part_mlp(z: Sizes) -> tuple[dict, list[str]]:
    x, y = mlp.data(10_000)
    scan = median_seconds(mlp.bnjax_scan(x, y, z.mlp_steps), repeats=z.repeats) / z.mlp_steps
    res, lines = {"scan_us_per_step": scan * 1e6, "many": []}, []
    xd, yd = jax.numpy.asarray(x), jax.numpy.asarray(y)
    for k in z.ks:
        t_seq, t_one = seeds.timings(seeds.MLP, k, z.many_steps, xd, yd, z.repeats, False)
        res["many"].append({"k": k, "layout": "vmap", "sequential_s": t_seq, "one_program_s": t_one,
                            "gain_per_model": t_seq / t_one})
        lines.append([str(k), "vmap", f"{t_seq / t_one:.2f}x"])
    return res, [f"One run as a lax.scan: {scan * 1e6:,.0f} us per step.", "",
                 table(["K seeds", "layout", "throughput per model vs one after another"], lines)]


def part_convnet(z: Sizes) -> tuple[dict, list[str]]:
    x, y = mlp.data(10_000)
    xd, yd = jax.numpy.asarray(x), jax.numpy.asarray(y)
    res, lines = [], []
    for layout in ("map", "matmul", "vmap"):
        t_seq, t_one = seeds.timings(seeds.CNN, z.cnn_k, z.many_steps, xd, yd, z.repeats, False, layout=layout)
        res.append({"k": z.cnn_k, "layout": layout, "sequential_s": t_seq, "one_program_s": t_one,
                    "gain_per_model": t_seq / t_one})
        lines.append([str(z.cnn_k), layout, f"{t_seq / t_one:.2f}x"])
    return {"layouts": res}, [table(["K ConvNets", "layout", "throughput per model vs one after another"], lines)]


def part_bn_cost(z: Sizes) -> tuple[dict, list[str]]:
    rng = np.random.default_rng(0)
    x = jax.numpy.asarray(rng.standard_normal((4 * z.wide_batch, 28, 28, 1), np.float32))
    y = jax.numpy.asarray(rng.integers(0, 10, len(x)).astype(np.int32))
    w = z.wide
    arms = {"no BN": dataclasses.replace(w, norm="none"), "BN two-pass": w,
            "BN one-pass": dataclasses.replace(w, bn_variance="one_pass"),
            "BN two-pass, bfloat16": dataclasses.replace(w, dtype="bfloat16")}
    t = {k: bn_cost.step_seconds(c, x, y, z.wide_steps, z.repeats, batch=z.wide_batch) for k, c in arms.items()}
    if torch_models.available():
        t["PyTorch BN, channels_last + bf16 autocast"] = _torch_wide_step(z)
    ips = {k: z.wide_batch / s for k, s in t.items()}
    lines = [[k, f"{s * 1e3:.2f}", f"{ips[k]:,.0f}", f"{s / t['no BN']:.2f}x"] for k, s in t.items()]
    return {"seconds_per_step": t, "images_per_s": ips}, [
        table([f"variant (conv {'-'.join(map(str, w.channels))}, fc {w.dense})", "ms / step", "images / s",
               "time vs no BN"], lines)]


def _torch_wide_step(z: Sizes) -> float:
    import torch

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    net = torch_models.wide_cnn(z.wide.channels, z.wide.dense).to(dev).to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    xb = torch.randn(z.wide_batch, 1, 28, 28, device=dev).to(memory_format=torch.channels_last)
    yb = torch.randint(0, 10, (z.wide_batch,), device=dev)

    def run():
        for _ in range(z.wide_steps):
            with torch.autocast(dev, dtype=torch.bfloat16):
                loss = torch.nn.functional.cross_entropy(net(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        loss.item()

    return median_seconds(run, repeats=z.repeats) / z.wide_steps


def environment() -> dict:
    d = jax.devices()[0]
    env = {"backend": jax.default_backend(), "device": getattr(d, "device_kind", str(d)), "devices": jax.device_count(),
           "host": platform.node(), "python": platform.python_version(), **runlog.versions()}
    if torch_models.available():
        import torch

        env["torch"] = torch.__version__
    return env


def _smoke_data(tmp: str) -> str:
    """Learnable 28x28 images for --smoke: class c is a bright 8x5 block at its own place
    in a noisy image, so a few hundred steps must beat chance (the test asserts it)."""
    rng = np.random.default_rng(0)
    path = os.path.join(tmp, "smoke.npz")

    def images(y: np.ndarray) -> np.ndarray:
        x = rng.integers(0, 96, (len(y), 28, 28), dtype=np.uint8)
        for c in range(10):
            r, col = divmod(c, 5)
            x[y == c, 3 + 12 * r:11 + 12 * r, 1 + 5 * col:6 + 5 * col] = 255
        return x

    y_train, y_test = np.arange(2048) % 10, np.arange(512) % 10
    np.savez(path, x_train=images(y_train), y_train=y_train, x_test=images(y_test), y_test=y_test)
    return f"npz:{path}"


def main(argv=None) -> None:
    p = _cli.parser(__doc__)
    p.add_argument("--out", required=True, help="directory for <part>.json and RESULTS.md")
    p.add_argument("--data", default="mnist", help="speedrun data (default: mnist; on a machine without network "
                                                   "npz:PATH); --smoke uses random 28x28 arrays")
    p.add_argument("--smoke", action="store_true", help="every part with tiny sizes (checks the script, not speed)")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats per measurement (default: 3; smoke 1)")
    args = _cli.parse(p, argv)
    z = SMOKE if args.smoke else FULL
    if args.repeats is not None:
        if args.repeats < 1:
            p.error(f"--repeats must be >= 1, got {args.repeats}")
        z = dataclasses.replace(z, repeats=args.repeats)
    os.makedirs(args.out, exist_ok=True)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        try:
            ds = data_lib.load(_smoke_data(tmp) if args.smoke else args.data, val_fraction=0.0)
        except (ValueError, FileNotFoundError, RuntimeError) as e:
            p.error(f"--data: {e}")
    env = environment()
    md = [f"# Device benchmarks ({env['backend']}: {env['device']})", "",
          f"Command: `{shlex.join(['python', '-m', 'experiments.bench.device', *(sys.argv[1:] if argv is None else argv)])}`",
          "",
          "Versions: " + ", ".join(f"{k} {v}" for k, v in env.items() if k not in ("backend", "device")), ""]
    parts = {"speedrun": lambda: part_speedrun(ds, z), "mlp": lambda: part_mlp(z), "convnet": lambda: part_convnet(z),
             "bn_cost": lambda: part_bn_cost(z)}
    runlog.write_json(os.path.join(args.out, "env.json"), env)
    failed = []
    for name, fn in parts.items():
        t = time.perf_counter()
        try:
            res, lines = fn()
        except Exception as e:  # a part that breaks on a new backend must not cost the others' minutes
            failed.append(name)
            res, lines = {"error": f"{type(e).__name__}: {e}"}, [f"FAILED: {type(e).__name__}: {e}"]
            traceback.print_exc()
        res["wall_s"] = time.perf_counter() - t
        runlog.write_json(os.path.join(args.out, f"{name}.json"), res)
        md += [f"## {name} ({res['wall_s']:.0f} s)", "", *lines, ""]
        print(f"{name}: {res['wall_s']:.1f} s", flush=True)
        _write_md(args.out, md + [f"Total so far: {time.perf_counter() - t0:.0f} s."])
    _write_md(args.out, md + [f"Total: {time.perf_counter() - t0:.0f} s."])
    print(f"wrote {args.out}/RESULTS.md ({time.perf_counter() - t0:.0f} s)")
    if failed:
        sys.exit(f"failed parts: {', '.join(failed)} (see {args.out}/RESULTS.md)")


def _write_md(out: str, md: list[str]) -> None:
    """RESULTS.md rewritten after every part, so a run cut short keeps what it measured."""
    with open(os.path.join(out, "RESULTS.md"), "w") as f:
        f.write("\n".join(md) + "\n")


if __name__ == "__main__":
    main()
