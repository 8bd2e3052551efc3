"""The Kubernetes manifests of a multi-node training (deploy/k8s/train-multinode.yaml): rendered from prefect.yaml,
valid against the Kubernetes API schema of the stated version, wired so that every pod meets pod 0 at its c10d
rendezvous; and the pods' two commands (the flow on pod 0, ``python -m training.launcher join`` on the others)
really train together (two nodes of one CPU rank rehearsed on this machine, on the loopback address).

The schema is the Kubernetes OpenAPI definitions as JSON schema, strict (no field the API does not know), vendored
from the kubernetes-validate wheel (tests/fixtures/k8s-schema/, provenance in PROVENANCE.json and the README there).
"""

from __future__ import annotations

import copy
import json
import re
import shlex
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from referencing import Registry, Resource

from finetune.config import load_config, parse_override
from finetune.models import hub_id
from foundation.errors import ConfigError
from training.launcher import (
    announcement_path,
    build_launch_command,
    free_port,
    join,
    read_announcement,
    run_training,
    write_announcement,
)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "deploy"))
import render_training_job  # noqa: E402

MANIFEST = ROOT / "deploy" / "k8s" / "train-multinode.yaml"
SCHEMAS = ROOT / "tests" / "fixtures" / "k8s-schema" / f"v{render_training_job.KUBERNETES_VERSION}.0-local-strict"


def _validator(doc: dict) -> jsonschema.Draft202012Validator:
    """The validator of a document's kind and apiVersion (``job-batch-v1.json``, ``service-v1.json``), as
    kubernetes-validate names and resolves them; a kind without a vendored schema fails, it is never skipped."""
    api = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", doc["apiVersion"])
    schema = json.loads((SCHEMAS / f"{doc['kind'].lower()}-{api}.json").read_text())
    definitions = json.loads((SCHEMAS / "_definitions.json").read_text())
    registry = Resource.from_contents(definitions) @ (Resource.from_contents(schema) @ Registry())
    return jsonschema.Draft202012Validator(schema, registry=registry)


def _errors(doc: dict) -> list[str]:
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in _validator(doc).iter_errors(doc)]


def _documents() -> dict[str, dict]:
    docs = [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]
    assert len(docs) == len({d["kind"] for d in docs}) == 2
    return {d["kind"]: d for d in docs}


def _commands(job: dict) -> tuple[list[str], list[str]]:
    """Pod 0's command (the flow) and the other pods' (join), from the container's script."""
    script = job["spec"]["template"]["spec"]["containers"][0]["args"][0].replace("\\\n", " ")
    lines = [shlex.split(line) for line in script.splitlines() if line.strip().startswith("exec ")]
    assert len(lines) == 2 and 'if [ "$JOB_COMPLETION_INDEX" = "0" ]; then' in script
    return lines[0][1:], lines[1][1:]


def _flags(argv: list[str]) -> dict[str, str]:
    return {argv[i]: argv[i + 1] for i in range(len(argv) - 1) if argv[i].startswith("--") and argv[i] != "--set"}


def test_the_manifests_are_rendered_from_prefect_yaml() -> None:
    out = subprocess.run([sys.executable, str(ROOT / "deploy" / "render_training_job.py"), "--check"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_every_document_is_valid_against_the_kubernetes_schema() -> None:
    provenance = json.loads((SCHEMAS / "PROVENANCE.json").read_text())
    assert provenance["kubernetes_version"].startswith(render_training_job.KUBERNETES_VERSION + ".")
    for kind, doc in _documents().items():
        assert _errors(doc) == [], kind


@pytest.mark.parametrize("breakage", [
    "a misspelt field", "a count as text", "a container without a name", "a port as text",
    "a failure rule without an action", "a volume mount without a path",
])
def test_a_broken_manifest_is_rejected(breakage: str) -> None:
    """The validation can fail: each of these would be refused by the API server (or, misspelt, silently ignored)."""
    docs = copy.deepcopy(_documents())
    job, svc = docs["Job"]["spec"], docs["Service"]["spec"]
    container = job["template"]["spec"]["containers"][0]
    if breakage == "a misspelt field":
        job["completionMod"] = job.pop("completionMode")
    elif breakage == "a count as text":
        job["completions"] = "two"
    elif breakage == "a container without a name":
        del container["name"]
    elif breakage == "a port as text":
        svc["ports"][0]["port"] = "c10d"
    elif breakage == "a failure rule without an action":
        del job["podFailurePolicy"]["rules"][0]["action"]
    else:
        del container["volumeMounts"][0]["mountPath"]
    assert _errors(docs["Job"]) + _errors(docs["Service"])


def test_every_pod_meets_pod_0_at_its_rendezvous() -> None:
    """The headless service gives pod 0 a stable name, <job>-0.<service>; the flow on pod 0 and the joining pods
    name that endpoint, the same port and node count (= the Job's completions) and GPUs per node (= the limit)."""
    docs = _documents()
    svc, job = docs["Service"], docs["Job"]
    spec, pod = job["spec"], job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert svc["spec"]["clusterIP"] == "None" and svc["spec"]["publishNotReadyAddresses"] is True
    assert svc["spec"]["selector"] == {"batch.kubernetes.io/job-name": job["metadata"]["name"]}
    assert pod["subdomain"] == svc["metadata"]["name"] and svc["metadata"]["namespace"] == job["metadata"]["namespace"]
    assert spec["completionMode"] == "Indexed" and spec["completions"] == spec["parallelism"] >= 2
    pod0 = f"{job['metadata']['name']}-0.{svc['metadata']['name']}"

    flow, joiner = _commands(job)
    assert flow[:2] == ["finetune", "run"] and joiner[:4] == ["python", "-m", "training.launcher", "join"]
    source = {d["name"]: d for d in yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]}
    params = source[render_training_job.DEPLOYMENT]["parameters"]
    assert flow[2] == params["config_path"]
    overrides = dict(parse_override(flow[i + 1]) for i in range(len(flow)) if flow[i] == "--set")
    assert params["overrides"].items() <= overrides.items()
    cfg = load_config(ROOT / flow[2], overrides)  # the config pod 0 runs is valid
    hw, flags = cfg.hardware, _flags(joiner)
    assert hw.rendezvous == "c10d" and cfg.train.launcher == "torchrun"
    assert hw.master_addr == flags["--master-addr"] == pod0
    assert hw.num_nodes == int(flags["--nnodes"]) == spec["completions"]
    assert hw.master_port == int(flags["--master-port"]) == svc["spec"]["ports"][0]["port"]
    assert hw.master_port == container["ports"][0]["containerPort"]
    assert hw.gpus_per_node == int(flags["--nproc-per-node"]) == container["resources"]["limits"]["nvidia.com/gpu"]
    assert cfg.world_size() == hw.gpus_per_node * spec["completions"]
    assert cfg.train.effective_batch_size == load_config(ROOT / flow[2]).train.effective_batch_size  # the recipe

    # What train_full runs on pod 0 and what join runs on the others: one torchrun command.
    spec_path = Path("/data/finetune/.cache/stages/train_full/k.work/train_spec.json")
    node0 = build_launch_command(spec_path=spec_path, nproc=hw.gpus_per_node, launcher=cfg.train.launcher,
                                 num_nodes=hw.num_nodes, master_addr=hw.master_addr, master_port=hw.master_port,
                                 rdzv_id="r")
    other = build_launch_command(spec_path=spec_path, nproc=int(flags["--nproc-per-node"]), launcher="torchrun",
                                 num_nodes=int(flags["--nnodes"]), master_addr=flags["--master-addr"],
                                 master_port=int(flags["--master-port"]), rdzv_id="r")
    assert node0 == other and f"{pod0}:{hw.master_port}" in node0


def test_restarts_and_the_shared_volume() -> None:
    job = _documents()["Job"]
    spec, pod = job["spec"], job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["restartPolicy"] == "Never" and spec["maxFailedIndexes"] == 0 and spec["backoffLimitPerIndex"] >= 1
    fail, ignore = spec["podFailurePolicy"]["rules"]
    assert fail["action"] == "FailJob" and fail["onExitCodes"]["containerName"] == container["name"]
    assert {2, 3} <= set(fail["onExitCodes"]["values"])  # a bad config, a rejected model: running again won't help
    assert ignore == {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}
    assert spec["successPolicy"] == {"rules": [{"succeededIndexes": "0"}]}  # done when the flow is
    env = {e["name"]: e["value"] for e in container["env"]}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    data = next(name for name, v in volumes.items() if "persistentVolumeClaim" in v)
    assert env["FINETUNE_HOME"].startswith(mounts[data] + "/")  # stages, checkpoints, announcements: shared
    cfg = load_config(ROOT / _commands(job)[0][2])
    if hub_id(cfg.model.ref):  # the spec names node 0's snapshot folder: the hub cache is shared too
        assert env["HF_HOME"].startswith(mounts[data] + "/")
    assert volumes["dshm"]["emptyDir"]["medium"] == "Memory" and mounts["dshm"] == "/dev/shm"


def test_the_rendering_follows_the_config() -> None:
    source = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    four = {d["kind"]: d for d in yaml.safe_load_all(render_training_job.render(source, num_nodes=4))}
    assert four["Job"]["spec"]["completions"] == four["Job"]["spec"]["parallelism"] == 4
    flow, joiner = _commands(four["Job"])
    assert "hardware.num_nodes=4" in flow and "train.micro_batch_size=2" in flow  # 64 = 2 x 8 GPUs x 4 nodes
    assert _flags(joiner)["--nnodes"] == "4" and _errors(four["Job"]) == []
    with pytest.raises(ValueError, match="cannot be split"):
        render_training_job.render(source, num_nodes=16)  # 64 examples a step over 128 GPUs


def test_a_joining_node_refuses_a_launch_of_another_shape(tmp_path: Path) -> None:
    with socket.socket() as server:  # node 0's rendezvous port, open
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        write_announcement(spec_path=tmp_path / "spec.json", nproc=8, num_nodes=3, master_addr="127.0.0.1",
                           master_port=port, rdzv_id="finetune-x")
        try:
            with pytest.raises(ConfigError, match="num_nodes: node 0 launched 3"):
                join(num_nodes=2, nproc=8, master_addr="127.0.0.1", master_port=port, once=True, poll_s=0.1)
        finally:
            announcement_path("127.0.0.1", port).unlink()


def test_the_pods_commands_train_together(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Node 0 as the flow's train_full runs it (run_training, one agent, c10d at an address) and a second node as
    ``python -m training.launcher join`` (the other pods' command): they meet, train one run of world size 2, and
    the announcement is withdrawn afterwards."""
    from tests.test_full_ft import _spec, make_token_dataset

    dataset = make_token_dataset(tmp_path / "dataset", tiny_model_dir, n_train=16)
    spec = _spec(tiny_model_dir, dataset, tmp_path / "run", stage=2, accum=1, world=2, max_steps=2,
                 checkpoint_every_steps=100)
    port = free_port()
    joiner = subprocess.Popen([sys.executable, "-m", "training.launcher", "join", "--nnodes", "2",
                               "--nproc-per-node", "1", "--master-addr", "127.0.0.1", "--master-port", str(port),
                               "--once"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    result: dict[str, Any] = {}

    def node0() -> None:
        try:
            result["summary"] = run_training(spec, nproc=1, num_nodes=2, master_addr="127.0.0.1", master_port=port)
        except BaseException as err:  # noqa: BLE001 - reported below
            result["error"] = err

    thread = threading.Thread(target=node0)
    thread.start()
    announced = None
    deadline = time.time() + 60
    while announced is None and time.time() < deadline and thread.is_alive():
        announced = read_announcement(announcement_path("127.0.0.1", port))
        time.sleep(0.1)
    thread.join(timeout=400)
    try:
        out, _ = joiner.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        joiner.kill()
        out, _ = joiner.communicate()
    assert not thread.is_alive() and "error" not in result, (result, out[-3000:])
    assert joiner.returncode == 0, out[-3000:]
    assert result["summary"]["world_size"] == 2 and result["summary"]["steps"] == 2
    assert announced is not None and f"--rdzv_id {announced['rdzv_id']}" in out
    assert f"--rdzv_id {announced['rdzv_id']}" in (tmp_path / "run" / "train.log").read_text()  # one launch
    assert announced["spec"] == str((tmp_path / "run" / "train_spec.json").resolve())
    assert read_announcement(announcement_path("127.0.0.1", port)) is None  # withdrawn: no later node joins it
