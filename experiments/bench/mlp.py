"""BN-paper MLP training throughput (784-100-100-100-10 sigmoid + BN, batch 60, SGD):
bnjax (1000 steps per lax.scan, batches sampled on the device) versus bnjax with one jit
call per step, versus PyTorch eager, same machine, same run.

    python -m experiments.bench.mlp [--steps 1000] [--threads 2]
"""

from __future__ import annotations


import jax
import numpy as np

from bnjax.config import DataConfig, ModelConfig, OptimConfig, TrainConfig
from bnjax.programs import compiled_chunk, model_for, optimizer_for
from bnjax.train import train_step
from experiments import _cli
from experiments.bench import torch_models
from experiments.bench._state import compiled_init
from experiments.bench._timing import median_seconds, table

CFG = TrainConfig(model=ModelConfig(arch="mlp", norm="batch", activation="sigmoid"),
                  optim=OptimConfig(name="sgd", learning_rate=0.1), data=DataConfig(batch_size=60))


def data(n: int = 60_000):
    rng = np.random.default_rng(0)
    return rng.standard_normal((n, 28, 28, 1), np.float32), rng.integers(0, 10, n).astype(np.int32)


def bnjax_scan(x, y, steps):
    model, tx = model_for(CFG.model), optimizer_for(CFG.optim, steps)
    xd, yd = jax.numpy.asarray(x), jax.numpy.asarray(y)
    holder = [compiled_init(model, tx, xd[:60], 0)]

    def run():
        holder[0], m = compiled_chunk(holder[0], xd, yd, model=model, tx=tx, pipeline=(), batch_size=60, n_steps=steps)
        jax.block_until_ready(m)

    return run


def bnjax_per_step(x, y, steps):
    model, tx = model_for(CFG.model), optimizer_for(CFG.optim, steps)
    step = jax.jit(lambda s, xb, yb: train_step(s, xb, yb, model=model, tx=tx), donate_argnums=0)
    xd, yd = jax.numpy.asarray(x), jax.numpy.asarray(y)
    idx = jax.numpy.asarray(np.random.default_rng(1).permutation(len(x))[: steps * 60].reshape(steps, 60))
    batches = [(xd[idx[i]], yd[idx[i]]) for i in range(steps)]
    holder = [compiled_init(model, tx, xd[:60], 0)]

    def run():
        for xb, yb in batches:
            holder[0], m = step(holder[0], xb, yb)
        jax.block_until_ready(m)

    return run


def torch_eager(x, y, steps, threads):
    import torch

    torch.set_num_threads(threads)
    net = torch_models.mlp(bn=True)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y).long()
    loss_fn = torch.nn.CrossEntropyLoss()

    def run():
        perm = torch.randperm(len(xt))
        for i in range(steps):
            b = perm[i * 60:(i + 1) * 60]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(net(xt[b]), yt[b])
            loss.backward()
            opt.step()
        loss.item()

    return run


def main(argv=None) -> None:
    p = _cli.parser(__doc__)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--threads", type=int, default=2, help="PyTorch intra-op threads (default: 2)")
    p.add_argument("--repeats", type=int, default=3)
    args = _cli.parse(p, argv)
    x, y = data()
    t_scan = median_seconds(bnjax_scan(x, y, args.steps), repeats=args.repeats) / args.steps
    t_step = median_seconds(bnjax_per_step(x, y, args.steps), repeats=args.repeats) / args.steps
    rows = [["bnjax, lax.scan of steps", f"{t_scan * 1e6:,.0f}", f"{1 / t_scan:,.0f}", "1.00x"],
            ["bnjax, one jit call per step", f"{t_step * 1e6:,.0f}", f"{1 / t_step:,.0f}", f"{t_scan / t_step:.2f}x"]]
    if torch_models.available():
        t_torch = median_seconds(torch_eager(x, y, args.steps, args.threads), repeats=args.repeats) / args.steps
        rows.append([f"PyTorch eager ({args.threads} threads)", f"{t_torch * 1e6:,.0f}", f"{1 / t_torch:,.0f}",
                     f"{t_scan / t_torch:.2f}x"])
    print(f"BN-paper MLP, batch 60, {args.steps} steps; backend {jax.default_backend()}")
    print(table(["implementation", "us / step", "steps / s", "throughput relative to bnjax scan"], rows))


if __name__ == "__main__":
    main()
