"""Many runs at once: K seeds of the BN-paper MLP (K = 8, 64) and of the BN ConvNet
(K = 8) trained in one compiled program (bnjax.many) versus the same K runs one after
another (each a lax.scan of the same steps). Prints per-model throughput ratios.

    python -m experiments.bench.seeds [--steps 200]
"""

from __future__ import annotations


import jax
import numpy as np

from bnjax.config import DataConfig, ModelConfig, OptimConfig, TrainConfig
from bnjax.many import layout_for, train_model
from bnjax.programs import compiled_chunk, compiled_chunk_many, model_for, optimizer_for
from experiments import _cli
from experiments.bench._state import compiled_init, compiled_init_many
from experiments.bench._timing import median_seconds, table

MLP = TrainConfig(model=ModelConfig(arch="mlp", norm="batch", activation="sigmoid"),
                  optim=OptimConfig(name="sgd", learning_rate=0.1), data=DataConfig(batch_size=60))
CNN = TrainConfig(model=ModelConfig(arch="convnet", norm="batch", activation="relu"),
                  optim=OptimConfig(name="momentum", learning_rate=0.01), data=DataConfig(batch_size=60))


def timings(cfg: TrainConfig, k: int, steps: int, x, y, repeats: int, share_data: bool,
            layout: str | None = None) -> tuple[float, float]:
    """Seconds for K runs of ``steps`` steps one after another and in one program (in
    ``layout``, default `bnjax.many.layout_for`)."""
    layout = layout or layout_for(cfg)
    model, tx = model_for(cfg.model), optimizer_for(cfg.optim, steps)
    many_model = model_for(train_model(cfg.model, layout))
    b = cfg.data.batch_size
    one = [compiled_init(model, tx, x[:b], 0)]

    def sequential():
        for s in range(k):
            one[0], m = compiled_chunk(one[0], x, y, model=model, tx=tx, pipeline=(), batch_size=b, n_steps=steps)
        jax.block_until_ready(m)

    many = [compiled_init_many(many_model, tx, x[:b], tuple(range(k)))]

    def together():
        many[0], m = compiled_chunk_many(many[0], x, y, layout=layout, share_data=share_data, model=many_model, tx=tx,
                                 pipeline=(), batch_size=b, n_steps=steps)
        jax.block_until_ready(m)

    return median_seconds(sequential, repeats=repeats), median_seconds(together, repeats=repeats)


def main(argv=None) -> None:
    p = _cli.parser(__doc__)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--cnn-k", type=int, default=8)
    args = _cli.parse(p, argv)
    rng = np.random.default_rng(0)
    x = jax.numpy.asarray(rng.standard_normal((60_000, 28, 28, 1), np.float32))
    y = jax.numpy.asarray(rng.integers(0, 10, 60_000).astype(np.int32))
    rows = []
    for name, cfg, k, share in (("MLP", MLP, 8, False), ("MLP", MLP, 8, True), ("MLP", MLP, 64, False),
                                ("MLP", MLP, 64, True), ("ConvNet", CNN, args.cnn_k, False),
                                ("ConvNet", CNN, args.cnn_k, True)):
        t_seq, t_one = timings(cfg, k, args.steps, x, y, args.repeats, share)
        rows.append([name, str(k), layout_for(cfg), "shared" if share else "own",
                     f"{t_seq / (k * args.steps) * 1e6:,.0f}",
                     f"{t_one / (k * args.steps) * 1e6:,.0f}", f"{t_seq / t_one:.2f}x"])
    print(f"K runs of {args.steps} steps each, batch 60; backend {jax.default_backend()}")
    print(table(["model", "K", "layout", "batches", "sequential us / model-step", "one program us / model-step",
                 "throughput gain"], rows))


if __name__ == "__main__":
    main()
