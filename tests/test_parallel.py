"""Data parallelism on 8 simulated CPU devices (a subprocess with
XLA_FLAGS=--xla_force_host_platform_device_count=8): sharded training equals one device,
masked uneven shards give exact global BN statistics, checkpoints move between layouts."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import bnjax

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = r"""
import json, sys
import jax, jax.numpy as jnp, numpy as np
jax.config.update("jax_default_matmul_precision", "highest")
from jax.sharding import PartitionSpec as P
from bnjax import config as C, fit, parallel
from bnjax.norm import BatchNorm, batch_moments
assert len(jax.devices()) == 8, jax.devices()
out, cfgs = {}, {}
for arch in ("mlp", "convnet"):
    cfg = C.TrainConfig(model=C.ModelConfig(arch=arch, hidden=(32, 32), channels=(8, 8), dense=32, norm="batch",
                                            activation="relu"),
                        optim=C.OptimConfig(name="momentum", learning_rate=0.05),
                        data=C.DataConfig(source="digits", batch_size=64, augment="rotate:10"),
                        steps=6, eval_every=3)
    cfgs[arch] = cfg
    one = fit(cfg, progress=False)
    many = fit(cfg, sys.argv[1] + "/" + arch, progress=False, mesh=parallel.make_mesh(8))
    leaf = jax.tree.leaves(many.state.params)[0]
    out[arch] = {
        "sharded_over": len(leaf.sharding.device_set),
        "params": max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(one.state.params),
                                                                      jax.tree.leaves(many.state.params))),
        "stats": max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(one.state.batch_stats),
                                                                     jax.tree.leaves(many.state.batch_stats))),
        "acc": [one.summary["final_test_accuracy"], many.summary["final_test_accuracy"]],
    }
# the step really is partitioned: XLA inserted cross-device reductions (the MLP's step: the cheaper to compile)
cfg = cfgs["mlp"]
from bnjax import loop, programs, data as D
from bnjax.train import create_state
m = programs.model_for(cfg.model); tx = programs.optimizer_for(cfg.optim, cfg.steps)
dev = parallel.replicate(D.to_device(loop.load_dataset(cfg)), parallel.make_mesh(8))
st = parallel.replicate(create_state(m, tx, dev["x_train"][:64], 0), parallel.make_mesh(8))
hlo = programs.compiled_chunk.lower(st, dev["x_train"], dev["y_train"], model=m, tx=tx, pipeline=(), batch_size=64,
                                     n_steps=2, sharding=parallel.batch_sharding(parallel.make_mesh(8))).compile().as_text()
out["all_reduce"] = hlo.count("all-reduce")
# uneven valid counts per device: device i holds i % 4 + 1 valid rows of 4
mesh = parallel.make_mesh(8)
x = jax.random.normal(jax.random.key(0), (32, 5)) * 3 + 2
mask = jnp.asarray(np.concatenate([np.arange(4) < (i % 4 + 1) for i in range(8)]))
f = jax.shard_map(lambda x, m: batch_moments(x, (0,), mask=m[:, None], axis_name=parallel.AXIS)[:2],
                  mesh=mesh, in_specs=(P(parallel.AXIS), P(parallel.AXIS)), out_specs=P())
mean, var = f(x, mask)
xv = np.asarray(x)[np.asarray(mask)]
out["masked"] = [float(np.max(np.abs(mean - xv.mean(0)))), float(np.max(np.abs(var - xv.var(0))))]
bn = BatchNorm(use_running_average=False, axis_name=parallel.AXIS)
v = bn.init(jax.random.key(0), x)
g = jax.shard_map(lambda x, m: bn.apply(v, x, mask=m[:, None], mutable=["batch_stats"])[0], mesh=mesh,
                  in_specs=(P(parallel.AXIS), P(parallel.AXIS)), out_specs=P(parallel.AXIS))
y = np.asarray(g(x, mask))[np.asarray(mask)]
out["masked_bn"] = float(np.max(np.abs(y - (xv - xv.mean(0)) / np.sqrt(xv.var(0) + 1e-5))))
print("RESULT" + json.dumps(out))
"""


@pytest.fixture(scope="session")
def child(once_per_run):
    """The 8-device child's results, computed once per test run (about half a minute) by
    the first xdist worker to ask; the others wait and read them."""

    def run_child(wd):
        flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=8".strip()
        env = {**os.environ, "XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu"}
        proc = subprocess.run([sys.executable, "-c", CHILD, str(wd)], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")][-1]
        return json.loads(line[len("RESULT"):])

    return once_per_run("eight_devices", run_child)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["mlp", "convnet"])
def test_sharded_training_equals_one_device(child, arch):
    _, out = child
    r = out[arch]
    assert r["sharded_over"] == 8
    assert r["params"] < 1e-5 and r["stats"] < 1e-5
    assert abs(r["acc"][0] - r["acc"][1]) < 1e-6


def test_the_step_is_partitioned_with_cross_device_reductions(child):
    assert child[1]["all_reduce"] > 0


def test_uneven_masked_shards_give_exact_global_statistics(child):
    _, out = child
    assert max(out["masked"]) < 1e-5
    assert out["masked_bn"] < 1e-4


def test_checkpoint_from_8_devices_restores_on_one(child):
    wd, out = child
    run = bnjax.load_run(str(wd / "mlp"))
    assert run.step == 6
    acc = bnjax.evaluate(run)["accuracy"]
    np.testing.assert_allclose(acc, out["mlp"]["acc"][1], atol=1e-6)


def _free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_over_loopback_agree_with_one_process(tmp_path):
    """jax.distributed.initialize with two CPU processes (gloo collectives over loopback),
    data parallel over their two devices; process 0 writes the run."""
    import jax

    args = ["--steps", "20", "--eval_every", "10", "--data.batch_size", "32", "--model.norm", "batch",
            "--model.activation", "relu", "--optim.name", "momentum", "--optim.learning_rate", "0.05", "--quiet"]
    port = _free_port()
    procs = [subprocess.Popen([sys.executable, "-m", "experiments.train", "--workdir", str(tmp_path / "mh"), *args,
                               "--devices", "all", "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2",
                               "--process-id", str(i), "--cpu-collectives", "gloo"], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert "final test accuracy" in outs[0] and "final test accuracy" not in outs[1]  # process 0 reports
    single = subprocess.run([sys.executable, "-m", "experiments.train", "--workdir", str(tmp_path / "sp"), *args],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr
    a, b = bnjax.load_run(str(tmp_path / "mh")), bnjax.load_run(str(tmp_path / "sp"))
    assert a.step == b.step == 20
    for x, y in zip(jax.tree.leaves(a.state.params), jax.tree.leaves(b.state.params), strict=True):
        np.testing.assert_allclose(x, y, atol=1e-5)
