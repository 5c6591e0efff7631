"""bnjax: batch normalisation and friends in JAX/Flax, for the regularisation lecture.

Main entry points: `BatchNorm` (ours, a drop-in for flax.linen.BatchNorm),
`population_statistics` (Algorithm 2), `fit` (train a config), `fit_group` (several in one
compiled program), `load_run` and
`evaluate` (analysis of a finished run in a Python session).
"""

from bnjax.analysis import LoadedRun, evaluate, load_run
from bnjax.config import DataConfig, ModelConfig, OptimConfig, TrainConfig
from bnjax.loop import fit, fit_group
from bnjax.norm import BatchNorm, population_statistics, torch_momentum_to_flax
from bnjax.renorm import BatchRenorm
from bnjax.runlog import code_version

code_version()  # fix the code version to the sources this process imported (see its docstring)

__all__ = [
    "BatchNorm", "BatchRenorm", "LoadedRun", "evaluate", "load_run", "DataConfig", "ModelConfig", "OptimConfig",
    "TrainConfig", "fit", "fit_group", "population_statistics", "torch_momentum_to_flax",
]
