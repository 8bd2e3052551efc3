"""Stage 2 logic: detect what hardware and software are really present.

Plain functions, no Prefect. ``detect_infra`` reads accelerators, bf16 support, CPU cores and RAM, free disk,
the DeepSpeed version and which of its ops are compatible or already built, and the communication backend.
"""

from __future__ import annotations

import os
import platform
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

_CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")
# oneDNN ISA levels (ONEDNN_MAX_CPU_ISA) below its first with bf16 dot products (AVX512_CORE_BF16): capped at one
# of these, oneDNN runs a bf16 matmul as emulation even on an AMX CPU.
_ONEDNN_ISA_WITHOUT_BF16 = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI")
_DS_OPS = {"cpu_adam": "CPUAdamBuilder", "fused_adam": "FusedAdamBuilder"}


@dataclass(frozen=True)
class InfraReport:
    """What the machine offers to a training run."""

    accelerator: str
    gpu_count: int
    gpu_names: list[str]
    gpu_memory_gb: list[float]
    bf16_supported: bool
    bf16_reason: str
    cpu_cores: int
    cpu_ram_gb: float
    disk_free_gb: float
    disk_path: str
    torch_version: str
    deepspeed_version: str
    ds_ops: dict[str, dict]
    comm_backend: str
    platform: str

    def as_dict(self) -> dict:
        """JSON-able form for manifests and reports."""
        return asdict(self)


def cpu_flags() -> set[str]:
    """CPU feature flags from /proc/cpuinfo (empty where it does not exist)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def cpu_bf16_flags() -> list[str]:
    """This CPU's native-bf16 flags (``amx_bf16``, ``avx512_bf16``), sorted; empty where bf16 would be emulated."""
    return sorted(cpu_flags() & set(_CPU_BF16_FLAGS))


def native_bf16() -> tuple[bool, str]:
    """Whether this machine computes bf16 natively (a CUDA device that supports it, else a CPU with AMX or
    AVX512-BF16), and why; where bf16 would be emulated it is slower than fp32."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported(), "torch.cuda.is_bf16_supported()"
    flags = cpu_bf16_flags()
    cap = onednn_isa_cap()
    if flags and cap in _ONEDNN_ISA_WITHOUT_BF16:
        return False, f"CPU flags {flags}, but ONEDNN_MAX_CPU_ISA={cap} caps oneDNN below bf16: bf16 would be emulated"
    if flags:
        return True, f"CPU flags {flags}"
    return False, "no amx_bf16/avx512_bf16 CPU flag: bf16 would be emulated (slow)"


def onednn_isa_cap() -> str | None:
    """The ISA level ``ONEDNN_MAX_CPU_ISA`` caps oneDNN at (upper case), or None where it is not set."""
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "").strip().upper()
    return cap or None


def _ds_ops_status(on_cpu: bool) -> dict[str, dict]:
    """For each DeepSpeed op we may use: compatible here, and already JIT-built in the extensions cache."""
    if on_cpu:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    from deepspeed.ops import op_builder

    ext_dir = Path(os.environ.get("TORCH_EXTENSIONS_DIR", Path.home() / ".cache" / "torch_extensions"))
    built = {p.name for p in ext_dir.rglob("*") if p.is_dir()} if ext_dir.exists() else set()
    status = {}
    for op, cls_name in _DS_OPS.items():
        cls = getattr(op_builder, cls_name, None)
        try:
            compatible = bool(cls and cls().is_compatible(verbose=False))
        except Exception as err:  # a builder probing for CUDA can fail in many ways on a CPU machine
            compatible, note = False, f"{type(err).__name__}: {err}"
        else:
            note = ""
        status[op] = {"compatible": compatible, "prebuilt": op in built, "note": note}
    return status


def detect_infra(disk_path: Path) -> InfraReport:
    """Detect accelerators, bf16 support, cores, RAM, free disk at ``disk_path``, DeepSpeed and its ops."""
    import psutil
    import torch

    cuda = torch.cuda.is_available()
    if cuda:
        count = torch.cuda.device_count()
        names = [torch.cuda.get_device_name(i) for i in range(count)]
        mems = [round(torch.cuda.get_device_properties(i).total_memory / 1e9, 1) for i in range(count)]
    else:
        count, names, mems = 0, [], []
    bf16, why = native_bf16()
    import deepspeed

    disk_path = Path(disk_path)
    disk_path.mkdir(parents=True, exist_ok=True)
    return InfraReport(
        accelerator="cuda" if cuda else "cpu",
        gpu_count=count,
        gpu_names=names,
        gpu_memory_gb=mems,
        bf16_supported=bf16,
        bf16_reason=why,
        cpu_cores=os.cpu_count() or 1,
        cpu_ram_gb=round(psutil.virtual_memory().total / 1e9, 1),
        disk_free_gb=round(shutil.disk_usage(disk_path).free / 1e9, 1),
        disk_path=str(disk_path),
        torch_version=torch.__version__,
        deepspeed_version=deepspeed.__version__,
        ds_ops=_ds_ops_status(on_cpu=not cuda),
        comm_backend="nccl" if cuda else "gloo",
        platform=f"{platform.system()} {platform.machine()} Python {platform.python_version()}",
    )


def checkpoint_footprint_gb(n_params: int, *, keep_last: int, bf16: bool) -> float:
    """Disk needed by the checkpoints kept plus the final model: weights + fp32 master + Adam moments each."""
    per_checkpoint = n_params * ((2 if bf16 else 4) + 4 + 8)
    final_model = n_params * 4
    return (per_checkpoint * (keep_last + 1) + final_model) / 1e9


def hardware_mismatches(report: InfraReport, *, accelerator: str, gpus_per_node: int, gpu_memory_gb: float,
                        cpu_ram_gb: float) -> list[str]:
    """Where the declared hardware is not what is present (empty when it all holds)."""
    problems = []
    if accelerator == "cuda":
        if report.gpu_count < gpus_per_node:
            problems.append(f"declared {gpus_per_node} GPU(s), found {report.gpu_count}")
        elif report.gpu_memory_gb and min(report.gpu_memory_gb) + 1 < gpu_memory_gb:
            problems.append(f"declared {gpu_memory_gb} GB per GPU, found {min(report.gpu_memory_gb)} GB")
    if cpu_ram_gb > report.cpu_ram_gb + 0.5:
        problems.append(f"declared {cpu_ram_gb} GB CPU RAM, found {report.cpu_ram_gb} GB")
    return problems
