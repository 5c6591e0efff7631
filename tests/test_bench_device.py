"""The accelerator benchmark script works before a device is lent: --smoke runs every part
with tiny sizes and writes each part's JSON and the Markdown table; what can be known at
smoke size is asserted (learnable data is learnt; every ratio is the one its own timings
give)."""

import json
import re

import pytest



@pytest.mark.slow
def test_device_benchmark_smoke_writes_every_part(tmp_path, capsys):
    from experiments.bench import device

    out = tmp_path / "dev"
    device.main(["--smoke", "--out", str(out)])  # in this process (returns: no part failed)
    printed = capsys.readouterr().out
    for name in ("speedrun", "mlp", "convnet", "bn_cost"):
        assert re.search(rf"^{name}: [\d.]+ s$", printed, flags=re.M), printed
    parts = {name: json.load(open(out / f"{name}.json")) for name in ("env", "speedrun", "mlp", "convnet", "bn_cost")}
    assert parts["env"]["backend"] == "cpu" and parts["env"]["jax"]
    assert {r["recipe"] for r in parts["speedrun"]["rows"]} >= {"published", "fast"}
    for r in parts["speedrun"]["rows"]:  # the smoke data is learnable: far above chance (0.10) after its steps
        assert len(r["accuracy"]) == 2 and min(r["accuracy"]) > 0.5, r
    assert [m["k"] for m in parts["mlp"]["many"]] == [2] and parts["mlp"]["scan_us_per_step"] > 0
    assert [c["layout"] for c in parts["convnet"]["layouts"]] == ["map", "matmul", "vmap"]
    for row in parts["mlp"]["many"] + parts["convnet"]["layouts"]:  # each gain is the ratio of its own timings
        assert row["gain_per_model"] == pytest.approx(row["sequential_s"] / row["one_program_s"])
    cost = parts["bn_cost"]
    assert set(cost["images_per_s"]) >= {"no BN", "BN two-pass", "BN one-pass", "BN two-pass, bfloat16"}
    for k, ips in cost["images_per_s"].items():
        assert ips == pytest.approx(32 / cost["seconds_per_step"][k])  # smoke batch 32
    md = open(out / "RESULTS.md").read()
    assert "| variant (conv 8-16, fc 32) |" in md  # the smoke's own narrow net, named
    for heading in ("## speedrun", "## mlp", "## convnet", "## bn_cost"):
        assert heading in md
    assert "Command: `python -m experiments.bench.device --smoke" in md
    for c in parts["convnet"]["layouts"]:  # the table shows the JSON's ratios
        assert re.search(rf"\|\s*{c['k']}\s*\|\s*{c['layout']}\s*\|\s*{c['gain_per_model']:.2f}x\s*\|", md), c


def test_device_benchmark_names_a_bad_data_source(tmp_path, capsys):
    from experiments.bench import device

    with pytest.raises(SystemExit) as e:  # in this process
        device.main(["--out", str(tmp_path), "--data", "npz:/nonexistent.npz"])
    assert e.value.code == 2 and "npz data file not found: /nonexistent.npz" in capsys.readouterr().err
