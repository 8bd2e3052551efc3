"""Scale-out without the hardware: the launch command, hostfile and DeepSpeed config that the reference config
produces for 2 nodes x 8 GPUs (world size 16). Nothing is launched."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from finetune.config import load_config
from foundation.errors import ConfigError
from finetune.setup_plan import choose_training_setup
from training.infra import InfraReport
from training.launcher import build_launch_command, write_hostfile
from training.memory import model_shape

ROOT = Path(__file__).resolve().parents[1]
HOSTS = ["gpu-node-a", "gpu-node-b"]


def _h100_node() -> InfraReport:
    """What infra detection reports on one node of the reference cluster (8 x 80 GB, bf16, NCCL)."""
    return InfraReport(
        accelerator="cuda", gpu_count=8, gpu_names=["NVIDIA A100-SXM4-80GB"] * 8, gpu_memory_gb=[80.0] * 8,
        bf16_supported=True, bf16_reason="compute capability 8.0", cpu_cores=128, cpu_ram_gb=1000.0,
        disk_free_gb=2000.0, disk_path="/", torch_version="2.13.0", deepspeed_version="0.19.8", ds_ops={},
        comm_backend="nccl", platform="linux",
    )


def _two_node_config(hostfile: Path, **extra):
    return load_config(ROOT / "configs" / "regulator.yaml", {
        "hardware.num_nodes": 2, "hardware.hostfile": str(hostfile), "train.micro_batch_size": 4, **extra})


def test_hostfile_lists_every_node_with_its_slots(tmp_path: Path) -> None:
    path = write_hostfile(HOSTS, slots=8, path=tmp_path / "hostfile")
    assert path.read_text() == "gpu-node-a slots=8\ngpu-node-b slots=8\n"


def test_deepspeed_multi_node_launch_command(tmp_path: Path) -> None:
    hostfile = write_hostfile(HOSTS, slots=8, path=tmp_path / "hostfile")
    spec = tmp_path / "train_spec.json"
    cmd = build_launch_command(spec_path=spec, nproc=8, launcher="deepspeed", num_nodes=2, hostfile=hostfile,
                               master_addr=HOSTS[0], master_port=29600)
    assert Path(cmd[0]).name == "deepspeed"
    args = dict(zip(cmd[1:-4:2], cmd[2:-4:2]))
    assert args == {"--num_gpus": "8", "--hostfile": str(hostfile), "--num_nodes": "2",
                    "--master_addr": "gpu-node-a", "--master_port": "29600"}
    assert cmd[-4:] == ["--module", "training.full_ft", "--spec", str(spec)]


def test_torchrun_multi_node_uses_a_c10d_rendezvous_on_the_master(tmp_path: Path) -> None:
    cmd = build_launch_command(spec_path=tmp_path / "s.json", nproc=8, launcher="torchrun", num_nodes=2,
                               master_addr="gpu-node-a", master_port=29600, python=sys.executable)
    joined = " ".join(cmd)
    assert "--standalone" not in cmd
    for part in ("--nnodes 2", "--nproc_per_node 8", "--rdzv_backend c10d", "--rdzv_endpoint gpu-node-a:29600"):
        assert part in joined


def test_multi_node_launch_refuses_what_cannot_work(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="master_addr"):
        build_launch_command(spec_path=tmp_path / "s.json", nproc=8, launcher="deepspeed", num_nodes=2,
                             hostfile=tmp_path / "hostfile")
    with pytest.raises(ConfigError, match="hostfile"):
        build_launch_command(spec_path=tmp_path / "s.json", nproc=8, launcher="torchrun", num_nodes=2,
                             hostfile=tmp_path / "hostfile", master_addr="gpu-node-a")


def test_deepspeed_config_for_two_nodes_of_eight_gpus(tmp_path: Path, base_model: Path) -> None:
    hostfile = write_hostfile(HOSTS, slots=8, path=tmp_path / "hostfile")
    cfg = _two_node_config(hostfile)
    assert cfg.world_size() == 16 and cfg.grad_accum_steps() == 1
    setup = choose_training_setup(cfg, _h100_node(), model_shape(base_model))
    ds = setup.ds_config
    assert setup.world_size == 16 and setup.bf16 and setup.zero_stage == 2
    assert ds["train_micro_batch_size_per_gpu"] == 4 and ds["gradient_accumulation_steps"] == 1
    assert ds["train_batch_size"] == 4 * 1 * 16 == cfg.train.effective_batch_size
    assert ds["zero_optimization"]["stage"] == 2
    assert ds["zero_optimization"]["contiguous_gradients"] is True
    assert ds["zero_optimization"]["reduce_bucket_size"] > 0 and ds["zero_optimization"]["allgather_bucket_size"] > 0
    assert ds["torch_autocast"] == {"enabled": True, "dtype": "bfloat16"}  # bf16 compute, fp32 master weights
    assert "torch_adam" not in ds["optimizer"]["params"]  # GPUs: DeepSpeed's fused Adam, not the CPU path
    assert setup.cfg.hardware.num_nodes == 2 and setup.cfg.hardware.hostfile == hostfile  # no silent fallback


def test_gradient_accumulation_fills_the_effective_batch_on_sixteen_gpus(tmp_path: Path, base_model: Path) -> None:
    hostfile = write_hostfile(HOSTS, slots=8, path=tmp_path / "hostfile")
    cfg = _two_node_config(hostfile, **{"train.micro_batch_size": 2, "train.effective_batch_size": 128})
    ds = choose_training_setup(cfg, _h100_node(), model_shape(base_model)).ds_config
    assert ds["gradient_accumulation_steps"] == 4
    assert ds["train_batch_size"] == 2 * 4 * 16 == 128


def test_an_effective_batch_that_sixteen_gpus_cannot_split_is_refused(tmp_path: Path) -> None:
    hostfile = write_hostfile(HOSTS, slots=8, path=tmp_path / "hostfile")
    with pytest.raises(ConfigError, match="effective_batch_size"):
        _two_node_config(hostfile, **{"train.micro_batch_size": 8})  # 8 x 16 = 128 > 64


def test_a_c10d_rendezvous_needs_no_hostfile_but_an_address_and_torchrun() -> None:
    from finetune.config import RunConfig, cross_field_problems

    def problems(**hardware) -> list[str]:
        return cross_field_problems(RunConfig.model_validate({"hardware": {"num_nodes": 2, **hardware}}))

    assert any("hostfile" in p for p in problems())  # the DeepSpeed launcher's SSH path needs one
    assert any("master_addr" in p for p in problems(rendezvous="c10d"))
    assert problems(rendezvous="c10d", master_addr="node-0.finetune") == []
    assert problems(rendezvous="c10d", local_nodes=True) == []
    bad = cross_field_problems(RunConfig.model_validate(
        {"hardware": {"num_nodes": 2, "rendezvous": "c10d", "local_nodes": True}, "train": {"launcher": "deepspeed"}}))
    assert any("torchrun" in p for p in bad)
