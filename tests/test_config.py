"""Config validation and flag parsing: errors name the field, exit code 2."""

import subprocess
import sys

import pytest

from bnjax import config as C


def test_invalid_values_name_the_field():
    with pytest.raises(C.ConfigError, match="model.norm"):
        C.ModelConfig(norm="batchnorm")
    with pytest.raises(C.ConfigError, match="optim.learning_rate"):
        C.OptimConfig(learning_rate=-1)
    with pytest.raises(C.ConfigError, match="data.augment"):
        C.DataConfig(augment="spin")
    with pytest.raises(C.ConfigError, match="data.source"):
        C.DataConfig(source="imagenet")
    with pytest.raises(C.ConfigError, match="model.virtual_batch_size"):
        C.TrainConfig(model=C.ModelConfig(norm="ghost", virtual_batch_size=7), data=C.DataConfig(batch_size=60))


def test_unknown_keys_are_refused_and_round_trip_works():
    cfg = C.TrainConfig(model=C.ModelConfig(hidden=(5, 6)))
    assert C.from_dict(C.TrainConfig, C.to_dict(cfg)) == cfg
    d = C.to_dict(cfg)
    d["model"]["widht"] = 3
    with pytest.raises(C.ConfigError, match="model.widht"):
        C.from_dict(C.TrainConfig, d)
    assert C.diff(cfg, C.replace(cfg, **{"optim.learning_rate": 0.3, "seed": 4})) == ["optim.learning_rate", "seed"]


@pytest.mark.parametrize("flags,needle", [
    (["--model.norm", "bogus"], "model.norm"),
    (["--optim.learning_rate", "fast"], "optim.learning_rate"),
    (["--data", "nowhere"], "data.source"),
    (["--no-such-flag"], "unrecognized arguments"),
])
def test_bad_flags_exit_2_with_message(flags, needle, capsys):
    from experiments import fig1_mnist

    with pytest.raises(SystemExit) as e:  # in this process: the flags are refused before anything is computed
        fig1_mnist.main(flags)
    assert e.value.code == 2
    assert needle in capsys.readouterr().err


def test_a_bad_flag_on_the_command_line_exits_2_naming_it():
    proc = subprocess.run([sys.executable, "-m", "experiments.fig1_mnist", "--model.norm", "bogus"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "model.norm" in proc.stderr
