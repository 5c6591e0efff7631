"""The public MNIST speedrun recipe (tuomaso/train_mnist_fast, final version: conv5x5x24-
pool-relu, conv3x3x32-pool-relu, fc256, fc10; Adam lr 0.01, betas 0.7/0.9, one-cycle
schedule, batch 256, one epoch, data normalised and resident) in bnjax and in PyTorch:
mean test accuracy over seeds and median wall time of one training (training only, data
already resident, compilation excluded), side by side.

bnjax runs its ConvNet (VALID padding as the recipe, --padding same for bnjax's default;
BN before each ReLU with --bn) as one lax.scan over the epoch; PyTorch runs the recipe as
published (eager, 2 threads).

    python -m experiments.bench.speedrun --data npz:../shared/data/mnist.npz [--seeds 5] [--bn]
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import numpy as np

from bnjax import data as data_lib
from bnjax.config import DataConfig, ModelConfig, OptimConfig, TrainConfig
from bnjax.evaluation import evaluate
from bnjax.loop import _train_chunk, eval_model_for, model_for, optimizer_for
from bnjax.train import create_state
from experiments.bench import torch_models
from experiments.bench._timing import table


def bnjax_runs(ds, seeds, *, bn: bool, batch: int, epochs: int, padding: str):
    steps = epochs * (len(ds.y_train) // batch)
    cfg = TrainConfig(model=ModelConfig(arch="convnet", activation="relu", norm="batch" if bn else "none",
                                        padding=padding),
                      optim=OptimConfig(name="adam", learning_rate=0.01, b1=0.7, b2=0.9, schedule="onecycle"),
                      data=DataConfig(batch_size=batch), steps=steps)
    model, tx = model_for(cfg.model), optimizer_for(cfg.optim, steps)
    dev = data_lib.to_device(ds)
    times, accs = [], []
    for seed in [-1, *seeds]:  # seed -1 only compiles
        state = create_state(model, tx, dev["x_train"][:batch], max(seed, 0))
        jax.block_until_ready(state)
        t = time.perf_counter()
        state, m = _train_chunk(state, dev["x_train"], dev["y_train"], model=model, tx=tx, pipeline=(),
                                batch_size=batch, n_steps=steps)
        jax.block_until_ready(state)
        if seed >= 0:
            times.append(time.perf_counter() - t)
            accs.append(float(evaluate(eval_model_for(cfg.model), state.variables, dev["x_test"],
                                       dev["y_test"])["accuracy"]))
    return times, accs


def torch_runs(ds, seeds, *, threads: int, batch: int = 256):
    import torch

    torch.set_num_threads(threads)
    xt = torch.from_numpy(ds.x_train.transpose(0, 3, 1, 2).copy())
    yt = torch.from_numpy(ds.y_train).long()
    xe = torch.from_numpy(ds.x_test.transpose(0, 3, 1, 2).copy())
    ye = torch.from_numpy(ds.y_test).long()
    times, accs = [], []
    for seed in seeds:
        torch.manual_seed(seed)
        net = torch_models.speedrun_cnn()
        opt = torch.optim.Adam(net.parameters(), lr=0.01, betas=(0.7, 0.9))
        steps = len(xt) // batch
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.01, total_steps=steps)
        loss_fn = torch.nn.CrossEntropyLoss()
        t = time.perf_counter()
        perm = torch.randperm(len(xt))
        for i in range(steps):
            b = perm[i * batch:(i + 1) * batch]
            opt.zero_grad(set_to_none=True)
            loss_fn(net(xt[b]), yt[b]).backward()
            opt.step()
            sched.step()
        times.append(time.perf_counter() - t)
        with torch.no_grad():
            accs.append(float((net(xe).argmax(1) == ye).float().mean()))
    return times, accs


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="mnist")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--bn", action="store_true", help="bnjax side: BN before each ReLU")
    p.add_argument("--batch", type=int, default=256, help="bnjax side batch size (default: 256)")
    p.add_argument("--epochs", type=int, default=1, help="bnjax side epochs (default: 1)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--padding", choices=("valid", "same"), default="valid", help="bnjax side (default: valid)")
    args = p.parse_args(argv)
    ds = data_lib.load(args.data)
    seeds = list(range(args.seeds))
    rows = []
    t, a = bnjax_runs(ds, seeds, bn=args.bn, batch=args.batch, epochs=args.epochs, padding=args.padding)
    label = (f"bnjax ConvNet ({args.padding}){' + BN' if args.bn else ''}, batch {args.batch}, "
             f"{args.epochs} epoch(s)")
    rows.append([label, f"{np.mean(a) * 100:.2f} ± {np.std(a) * 100:.2f}", f"{statistics.median(t):.2f}"])
    if torch_models.available():
        tt, ta = torch_runs(ds, seeds, threads=args.threads)
        rows.append([f"PyTorch recipe (eager, {args.threads} threads)", f"{np.mean(ta) * 100:.2f} ± "
                     f"{np.std(ta) * 100:.2f}", f"{statistics.median(tt):.2f}"])
        rows[0].append(f"{statistics.median(tt) / statistics.median(t):.2f}x")
        rows[1].append("1.00x")
    print(f"MNIST speedrun, {args.seeds} seeds; backend {jax.default_backend()}")
    print(table(["implementation", "test accuracy %", "median train s", "speed vs PyTorch"][: len(rows[0])], rows))


if __name__ == "__main__":
    main()
