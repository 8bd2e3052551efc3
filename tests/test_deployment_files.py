"""The deployment files: the Kubernetes variant runs what the process deployments run, on the same schedules."""

from __future__ import annotations

from pathlib import Path


def test_kubernetes_deployments_match_the_process_ones() -> None:
    """deploy/k8s.prefect.yaml runs the same deployments on another pool: what they run and when must not drift."""
    import yaml

    root = Path(__file__).resolve().parents[1]
    process = {d["name"]: d for d in yaml.safe_load((root / "prefect.yaml").read_text())["deployments"]}
    k8s = {d["name"]: d for d in yaml.safe_load((root / "deploy/k8s.prefect.yaml").read_text())["deployments"]}
    assert k8s, "no deployment in deploy/k8s.prefect.yaml"
    for name, dep in k8s.items():
        assert name in process, f"k8s deployment {name!r} has no process twin in prefect.yaml"
        for key in ("entrypoint", "parameters", "schedules", "concurrency_limit"):
            assert dep.get(key) == process[name].get(key), f"{name}.{key} differs between the two files"
