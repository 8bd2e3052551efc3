"""Launch :mod:`training.full_ft` under a standard launcher (torchrun or deepspeed) as a subprocess.

One process (the CPU default), N processes on this machine, or many nodes (a DeepSpeed hostfile / node list, or a
torchrun rendezvous that the caller starts on every node) all run the same entry point; only the command differs.
``local_nodes`` starts every node's torch elastic agent on this machine: a multi-node run rehearsed on one box
(each agent its own process group, as on its own node; a killed agent is a lost node).

A c10d launch across machines: node 0 (the flow's ``train_full``) announces each launch on the shared project home
(the spec, the rendezvous id) and starts its agent; every other node runs ``python -m training.launcher join ...``,
which waits for the announcement and starts the same torchrun command there (a pod of deploy/k8s/train-multinode.yaml).
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from pathlib import Path
from typing import Callable, Literal, Sequence

from foundation.errors import ConfigError, TrainingError
from foundation.paths import cache_dir, write_json_atomic
from training.full_ft import SUMMARY_FILE, TrainSpec

ENTRY_MODULE = "training.full_ft"
REPO_ROOT = Path(__file__).resolve().parents[1]
LOG_FILE = "train.log"
SPEC_FILE = "train_spec.json"
Launcher = Literal["torchrun", "deepspeed"]


def build_launch_command(
    *,
    spec_path: Path,
    nproc: int = 1,
    launcher: Launcher = "torchrun",
    num_nodes: int = 1,
    hostfile: Path | None = None,
    master_addr: str | None = None,
    master_port: int = 29500,
    rdzv_id: str = "finetune",
    python: str = sys.executable,
) -> list[str]:
    """Return the argv that starts ``nproc`` ranks per node of ``training.full_ft --spec spec_path``.

    - torchrun, one node: ``torchrun --standalone --nproc_per_node N -m training.full_ft --spec ...`` (a free port is
      picked by torchrun, so concurrent runs do not collide).
    - torchrun, ``num_nodes`` > 1: a c10d rendezvous at ``master_addr:master_port``; run the same command on every node.
    - deepspeed: ``deepspeed --num_gpus N [--hostfile H --num_nodes M --master_addr A --master_port P] --module ...``;
      with a hostfile the DeepSpeed runner starts the remote ranks itself (pdsh/ssh).
    Raises ConfigError on inconsistent arguments.
    """
    problems = []
    if nproc < 1:
        problems.append(f"nproc: must be >= 1, got {nproc}")
    if num_nodes < 1:
        problems.append(f"num_nodes: must be >= 1, got {num_nodes}")
    if num_nodes > 1 and not master_addr:
        problems.append("master_addr: required for a multi-node launch (the rank-0 node's address)")
    if hostfile is not None and launcher != "deepspeed":
        problems.append("hostfile: only the deepspeed launcher reads a hostfile; use launcher='deepspeed'")
    if launcher not in ("torchrun", "deepspeed"):
        problems.append(f"launcher: must be 'torchrun' or 'deepspeed', got {launcher!r}")
    if problems:
        raise ConfigError(problems, source="launch")
    entry = [ENTRY_MODULE, "--spec", str(spec_path)]
    if launcher == "torchrun":
        cmd = [python, "-m", "torch.distributed.run"]
        if num_nodes == 1:
            cmd += ["--standalone", "--nproc_per_node", str(nproc)]
        else:
            # A lost node ends the run (no in-place restart): the flow's retry resumes from the last checkpoint.
            cmd += ["--nnodes", str(num_nodes), "--nproc_per_node", str(nproc), "--rdzv_backend", "c10d",
                    "--rdzv_endpoint", f"{master_addr}:{master_port}", "--rdzv_id", rdzv_id, "--max_restarts", "0"]
        return cmd + ["-m", *entry]
    # Without --num_gpus the DeepSpeed runner starts a single rank on a CPU machine.
    cmd = [str(Path(python).parent / "deepspeed"), "--num_gpus", str(nproc)]
    if hostfile is not None:
        cmd += ["--hostfile", str(hostfile), "--num_nodes", str(num_nodes)]
    if master_addr:
        cmd += ["--master_addr", master_addr, "--master_port", str(master_port)]
    return cmd + ["--module", *entry]


def write_hostfile(hosts: Sequence[str], *, slots: int, path: Path) -> Path:
    """Write a DeepSpeed hostfile (``host slots=N`` per line) for a node list and return its path."""
    path = Path(path)
    path.write_text("".join(f"{h} slots={slots}\n" for h in hosts))
    return path


def torch_extensions_dir() -> Path:
    """The folder torch builds JIT extensions into by default, named explicitly so every rank and run reuses it."""
    import torch
    from torch.utils.cpp_extension import get_default_build_root

    accel = f"cu{torch.version.cuda.replace('.', '')}" if torch.version.cuda else "cpu"
    return Path(get_default_build_root()) / f"py{sys.version_info.major}{sys.version_info.minor}_{accel}"


def launch_env(*, nproc: int, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment of the launch: the repository importable, a stable extension cache, threads split across ranks."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    env.setdefault("TORCH_EXTENSIONS_DIR", str(torch_extensions_dir()))
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.update(extra or {})
    return env


def _stop_group(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    """Terminate the launcher and every rank it started (they share its process group), then kill stragglers."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=grace_s)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def announcement_path(master_addr: str, master_port: int) -> Path:
    """Where node 0 announces a c10d launch at ``master_addr:master_port``: the project home, shared by every node."""
    return cache_dir() / "rendezvous" / f"{re.sub(r'[^A-Za-z0-9._-]', '_', master_addr)}_{master_port}.json"


def write_announcement(*, spec_path: Path, nproc: int, num_nodes: int, master_addr: str, master_port: int,
                       rdzv_id: str) -> Path:
    """Announce a launch to the nodes that join it: the spec (on the shared volume) and the rendezvous id."""
    path = announcement_path(master_addr, master_port)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, {"rdzv_id": rdzv_id, "spec": str(Path(spec_path).resolve()), "nproc_per_node": nproc,
                             "num_nodes": num_nodes, "master_addr": master_addr, "master_port": master_port,
                             "written_at": time.time()})
    return path


def read_announcement(path: Path) -> dict | None:
    """The announcement at ``path``, or None when there is none (or it is being replaced)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def withdraw_announcement(path: Path, rdzv_id: str) -> None:
    """Remove the launch's announcement when it is still this launch's."""
    current = read_announcement(path)
    if current is not None and current.get("rdzv_id") == rdzv_id:
        path.unlink(missing_ok=True)


def _listening(host: str, port: int) -> bool:
    """Whether something accepts TCP connections at host:port (node 0's rendezvous store once its agent is up)."""
    try:
        with socket.create_connection((host, port), timeout=5):
            return True
    except OSError:
        return False


def join(*, num_nodes: int, nproc: int, master_addr: str, master_port: int, once: bool = False,
         poll_s: float = 2.0) -> int:
    """Run one node of the c10d launches that node 0 announces at ``master_addr:master_port``.

    For each new announcement (seen once node 0's rendezvous port accepts connections, so an announcement left by a
    node 0 that died is not joined), start the command node 0 runs, ``build_launch_command`` with the announced spec
    and rendezvous id, here; its output goes to this process's. Then wait for the next launch (the flow's retry of
    train_full after a lost node), or return its exit code when ``once``. Raises ConfigError when the announced
    launch has another shape (nodes, ranks per node) than this node was started for.
    """
    path, served = announcement_path(master_addr, master_port), None
    print(f"node waiting for launches announced at {path} (rendezvous {master_addr}:{master_port})", flush=True)
    while True:
        seen = read_announcement(path)
        if seen is None or seen.get("rdzv_id") == served or not _listening(master_addr, master_port):
            time.sleep(poll_s)
            continue
        ann = read_announcement(path)  # again: node 0 writes it before its agent opens the port
        if ann is None or ann.get("rdzv_id") == served:
            continue
        problems = [f"{key}: node 0 launched {ann.get(key)!r}, this node was started for {mine!r}"
                    for key, mine in (("num_nodes", num_nodes), ("nproc_per_node", nproc)) if ann.get(key) != mine]
        if problems:
            raise ConfigError(problems, source=str(path))
        served = ann["rdzv_id"]
        cmd = build_launch_command(spec_path=Path(ann["spec"]), nproc=nproc, launcher="torchrun", num_nodes=num_nodes,
                                   master_addr=master_addr, master_port=master_port, rdzv_id=served)
        print(f"$ {' '.join(cmd)}", flush=True)
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=launch_env(nproc=nproc), start_new_session=True)
        try:
            code = proc.wait()
        except BaseException:
            _stop_group(proc)
            raise
        print(f"launch {served} ended with exit code {code}", flush=True)
        if once:
            return code


def _follow(procs: list[subprocess.Popen], log_file, tail: deque[str],
            on_line: Callable[[str], None] | None) -> list[int]:
    """Stream every launch's output (prefixed ``[node i]`` when there are several) into the log, ``tail`` and
    ``on_line`` until all have exited; when one exits non-zero, stop the others (a lost node ends the run)."""
    lines: queue.Queue[tuple[int, str | None]] = queue.Queue()

    def pump(i: int, proc: subprocess.Popen) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:  # text mode splits on \r too, so tqdm updates arrive as lines
            lines.put((i, line.rstrip("\n")))
        lines.put((i, None))

    for i, proc in enumerate(procs):
        threading.Thread(target=pump, args=(i, proc), daemon=True).start()
    open_streams, codes = len(procs), [0] * len(procs)
    while open_streams:
        i, line = lines.get()
        if line is None:
            open_streams -= 1
            codes[i] = procs[i].wait()
            if codes[i] != 0:
                for other in procs:
                    if other.poll() is None:
                        _stop_group(other)
            continue
        line = f"[node {i}] {line}" if len(procs) > 1 else line
        log_file.write(line + "\n")
        log_file.flush()
        tail.append(line)
        if on_line is not None:
            on_line(line)
    return codes


def run_training(
    spec: TrainSpec,
    *,
    nproc: int = 1,
    launcher: Launcher = "torchrun",
    num_nodes: int = 1,
    hostfile: Path | None = None,
    hosts: Sequence[str] | None = None,
    master_addr: str | None = None,
    master_port: int = 29500,
    local_nodes: bool = False,
    env: dict[str, str] | None = None,
    on_line: Callable[[str], None] | None = None,
) -> dict:
    """Run full fine-tuning in a subprocess and return its ``train_summary.json``.

    The spec is written to ``output_dir/train_spec.json``; the launcher's output (every rank) is appended to
    ``output_dir/train.log`` and passed line by line to ``on_line``. Calling again with the same ``output_dir``
    resumes from the last complete checkpoint. ``hosts`` is turned into a hostfile for the deepspeed launcher.
    ``local_nodes`` (torchrun, ``num_nodes`` > 1): start all ``num_nodes`` agents here, on a c10d rendezvous at
    ``master_addr`` (default 127.0.0.1); their lines are prefixed ``[node i]``; when one exits non-zero the others are
    stopped. Raises TrainingError (with the log's tail) when a launch exits non-zero; an interrupt stops every rank.
    """
    out = Path(spec.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    spec_path = spec.save(out / SPEC_FILE)
    if hosts:
        hostfile = write_hostfile(hosts, slots=nproc, path=out / "hostfile")
        launcher, num_nodes = "deepspeed", len(hosts)
        master_addr = master_addr or hosts[0]
    agents = num_nodes if local_nodes and num_nodes > 1 else 1
    rdzv_id = "finetune"
    if agents > 1:  # a rehearsal on this machine: a free port and a fresh rendezvous, so runs never meet
        master_addr, master_port = master_addr or "127.0.0.1", free_port()
        rdzv_id = f"finetune-{master_port}"
    # Across machines (c10d, one agent here): announce the launch to the nodes that join it (``join``); a fresh
    # rendezvous id per launch, so an agent started for an earlier launch can never meet this one.
    announce = launcher == "torchrun" and num_nodes > 1 and agents == 1
    if announce:
        rdzv_id = f"finetune-{uuid.uuid4().hex[:12]}"
    cmd = build_launch_command(spec_path=spec_path, nproc=nproc, launcher=launcher, num_nodes=num_nodes,
                               hostfile=hostfile, master_addr=master_addr, master_port=master_port, rdzv_id=rdzv_id)
    tail: deque[str] = deque(maxlen=60)
    started = time.time()
    with (out / LOG_FILE).open("a", encoding="utf-8") as log_file:
        log_file.write(f"$ {' '.join(cmd)}" + (f"   (x{agents} local nodes)" if agents > 1 else "") + "\n")
        if announce:  # before the agent opens the rendezvous port: a joining node that finds the port open reads this
            announcement = write_announcement(spec_path=spec_path, nproc=nproc, num_nodes=num_nodes,
                                              master_addr=str(master_addr), master_port=master_port, rdzv_id=rdzv_id)
        try:
            procs = [subprocess.Popen(cmd, cwd=REPO_ROOT, env=launch_env(nproc=nproc, extra=env),
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                                      start_new_session=True)
                     for _ in range(agents)]
            try:
                codes = _follow(procs, log_file, tail, on_line)
            except BaseException:
                for proc in procs:
                    _stop_group(proc)
                raise
        finally:
            if announce:
                withdraw_announcement(announcement, rdzv_id)
    rc = next((code for code in codes if code != 0), 0)
    if rc != 0:
        raise TrainingError(
            f"training exited with code {rc} after {time.time() - started:.0f}s ({' '.join(cmd)}); full log: "
            f"{out / LOG_FILE}; re-running resumes from the last complete checkpoint. Last lines:\n" + "\n".join(tail)
        )
    summary_path = out / SUMMARY_FILE
    if not summary_path.is_file():
        raise TrainingError(f"training exited 0 but wrote no {summary_path}; see {out / LOG_FILE}")
    return json.loads(summary_path.read_text())


def main(argv: list[str] | None = None) -> int:
    """``python -m training.launcher join ...``: one node (not node 0) of a c10d launch across machines."""
    parser = argparse.ArgumentParser(prog="python -m training.launcher")
    sub = parser.add_subparsers(dest="command", required=True)
    j = sub.add_parser("join", help="run this node's torch elastic agent for every launch node 0 announces",
                       description="Wait for node 0 (the flow's train_full) to announce a c10d launch on the shared "
                                   "project home (FINETUNE_HOME), then start the same torchrun command here. Exit 2 "
                                   "when the announced launch has another shape than given.")
    j.add_argument("--nnodes", type=int, required=True, help="nodes in the launch (hardware.num_nodes)")
    j.add_argument("--nproc-per-node", type=int, required=True, help="ranks on this node (hardware.gpus_per_node)")
    j.add_argument("--master-addr", required=True, help="node 0's address (hardware.master_addr)")
    j.add_argument("--master-port", type=int, required=True, help="the rendezvous port (hardware.master_port)")
    j.add_argument("--once", action="store_true", help="return after one launch with its exit code")
    args = parser.parse_args(argv)
    if args.nnodes < 2 or args.nproc_per_node < 1:
        parser.error("--nnodes must be >= 2 (a node joins node 0) and --nproc-per-node >= 1")
    # SIGTERM (a pod being stopped) unwinds like an interrupt, which stops the agent and its ranks.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    try:
        return join(num_nodes=args.nnodes, nproc=args.nproc_per_node, master_addr=args.master_addr,
                    master_port=args.master_port, once=args.once)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
