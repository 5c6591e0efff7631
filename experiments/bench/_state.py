"""The benchmarks' initial states, each one compiled program.

`bnjax.train.create_state` runs op by op: a suite initialises many models that share layer
shapes, and op by op they share the per-op programs (a jitted initialiser compiled a
program per model: 6 s more on the quick suite). A benchmark initialises each of its
models once in a fresh process, where op by op a ConvNet's initialisers and init-time
forward pass compile dozens of small programs: jitted with the seed traced, one program
per model and optimiser (the device benchmark's smoke: 33 s op by op, 27 s jitted).
"""

from __future__ import annotations

import jax

from bnjax.many import init_many
from bnjax.train import create_state

#: `bnjax.train.create_state`, jitted (model and optimiser static, the seed traced).
compiled_init = jax.jit(create_state, static_argnames=("model", "tx"))

#: `bnjax.many.init_many`, jitted: K stacked states in one program (``seeds`` a tuple: static).
compiled_init_many = jax.jit(init_many, static_argnames=("model", "tx", "seeds"))
