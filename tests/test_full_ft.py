"""Full fine-tuning through the real DeepSpeed engine, launched as a subprocess the way the pipeline does.

DeepSpeed start-up costs 10-25 s per process here, so the engine scenarios are combined: one 1-rank ZeRO-2 run
(loss falls, model exports), a 2-rank gloo run compared with it step by step, and a ZeRO-3 bf16 run killed with
SIGKILL after its first checkpoints and resumed (with a corrupt newer checkpoint planted to be skipped). The
data, replay and checkpoint bookkeeping are unit-tested without DeepSpeed.
"""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from foundation.errors import CheckpointError, ConfigError, DataError, TrainingError
from training.checkpoints import (
    MARKER,
    find_latest_complete,
    list_checkpoints,
    prune_checkpoints,
    read_complete,
    tag_for,
)
from training.data import IGNORE_INDEX, Example, MicroBatches, collate, load_examples, plan_epoch
from training.deepspeed_config import build_deepspeed_config
from training.full_ft import TrainSpec
from training.launcher import LOG_FILE, build_launch_command, launch_env, run_training
from training.replay import mix_replay, read_replay_pairs, tokenize_pair

STEPS = 6


def make_token_dataset(out: Path, tokenizer_dir: Path, *, n_train: int = 48) -> Path:
    """Save a small DatasetDict of chat-templated 'add two numbers' examples with prompt tokens masked."""
    from datasets import Dataset, DatasetDict
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    rng = random.Random(0)

    def row(i: int) -> dict:
        a, b = rng.randint(0, 99), rng.randint(0, 99)
        ex = tokenize_pair(tok, f"Add {a} and {b}." + " Show it." * (i % 4), f"The sum is {a + b}.")
        return {"id": str(i), "input_ids": ex.input_ids, "labels": ex.labels, "n_tokens": len(ex.input_ids)}

    splits = {"train": n_train, "validation": 8, "test": 8}
    DatasetDict({s: Dataset.from_list([row(i) for i in range(n)]) for s, n in splits.items()}).save_to_disk(out)
    return out


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory: pytest.TempPathFactory, tokenizer_dir: Path) -> Path:
    return make_token_dataset(tmp_path_factory.mktemp("data") / "dataset", tokenizer_dir)


def _spec(tiny_model_dir: Path, dataset_dir: Path, out: Path, *, stage: int, accum: int, world: int = 1,
          bf16: bool = False, **kw) -> TrainSpec:
    cfg = build_deepspeed_config(micro_batch_size=4, grad_accum_steps=accum, world_size=world, zero_stage=stage,
                                 bf16=bf16, lr=3e-3, on_cpu=True)
    defaults = dict(epochs=1, max_steps=STEPS, warmup_ratio=0.3, seed=1)
    return TrainSpec(model_dir=str(tiny_model_dir), dataset_dir=str(dataset_dir), output_dir=str(out),
                     ds_config=cfg, **(defaults | kw))


def _metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _assert_exported(out: Path, tiny_model_dir: Path) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(out / "model")
    ref = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    for (name, p), (_, q) in zip(model.named_parameters(), ref.named_parameters()):
        assert p.shape == q.shape and p.numel() > 0, name
    assert not torch.equal(model.model.embed_tokens.weight, ref.model.embed_tokens.weight)  # it trained
    assert (out / "model" / "tokenizer.json").is_file() and (out / "model" / "generation_config.json").is_file()


# ---- DeepSpeed runs (subprocesses) ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def one_rank_run(tmp_path_factory, tiny_model_dir: Path, dataset_dir: Path) -> Path:
    """1 rank, ZeRO-2 fp32, 2 accumulation steps."""
    out = tmp_path_factory.mktemp("zero2-1rank")
    lines: list[str] = []
    summary = run_training(_spec(tiny_model_dir, dataset_dir, out, stage=2, accum=2), nproc=1, on_line=lines.append)
    assert summary["steps"] == STEPS and summary["resumed_from"] is None
    assert any("full FT" in line for line in lines)  # the output was streamed
    return out


def test_zero2_trains_and_exports(one_rank_run: Path, tiny_model_dir: Path) -> None:
    records = _metrics(one_rank_run)
    assert [r["step"] for r in records] == list(range(1, STEPS + 1))
    assert records[-1]["loss"] < records[0]["loss"] - 0.3
    assert all(r["total_steps"] == STEPS and r["tokens_per_s"] > 0 and r["grad_norm"] > 0 for r in records)
    lrs = [r["lr"] for r in records]
    assert lrs[0] < lrs[1] and lrs[-1] < lrs[1]  # warmup, then decay
    summary = json.loads((one_rank_run / "train_summary.json").read_text())
    assert summary["zero_stage"] == 2 and summary["tokens"] == records[-1]["tokens"]
    assert summary["trainable_params"] == summary["exported_params"]
    _assert_exported(one_rank_run, tiny_model_dir)


def test_two_ranks_match_one_rank(one_rank_run: Path, tiny_model_dir: Path, dataset_dir: Path, tmp_path) -> None:
    """2 gloo ranks x 1 micro-batch see the same data per step as 1 rank x 2 accumulated micro-batches."""
    summary = run_training(_spec(tiny_model_dir, dataset_dir, tmp_path, stage=2, accum=1, world=2), nproc=2)
    assert summary["world_size"] == 2
    one, two = _metrics(one_rank_run), _metrics(tmp_path)
    assert [r["tokens"] for r in one] == [r["tokens"] for r in two]
    for a, b in zip(one, two):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4), (a["step"], a["loss"], b["loss"])


def test_zero3_bf16_killed_then_resumed(tiny_model_dir: Path, dataset_dir: Path, tmp_path: Path) -> None:
    """SIGKILL the launch after two checkpoints, plant a corrupt newer one, re-run: it resumes and finishes."""
    total = 20  # tiny steps are fast: enough of them that the kill lands well before the end, even on a busy machine
    spec = _spec(tiny_model_dir, dataset_dir, tmp_path, stage=3, accum=1, bf16=True, max_steps=total, epochs=2,
                 checkpoint_every_steps=2, keep_last_checkpoints=2)
    spec_path = spec.save(tmp_path / "train_spec.json")
    cmd = build_launch_command(spec_path=spec_path, nproc=1)
    with (tmp_path / "first.log").open("w") as log:
        proc = subprocess.Popen(cmd, env=launch_env(nproc=1), stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        deadline = time.time() + 240
        while not (tmp_path / "checkpoints" / tag_for(4) / MARKER).is_file():
            assert proc.poll() is None and time.time() < deadline, (tmp_path / "first.log").read_text()[-3000:]
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    killed_at = max(r["step"] for r in _metrics(tmp_path))
    assert killed_at < total and not (tmp_path / "model").exists()
    newest = max(int(p.name.split("-")[1]) for p in list_checkpoints(tmp_path / "checkpoints"))
    corrupt = tmp_path / "checkpoints" / tag_for(newest + 1)  # odd: never written by an every-2-steps schedule
    corrupt.mkdir()
    (corrupt / MARKER).write_text("{not json")

    summary = run_training(spec, nproc=1)
    last_complete = summary["resumed_from"]
    assert last_complete is not None and int(last_complete.split("-")[1]) >= 4
    assert summary["steps"] == total and summary["zero_stage"] == 3 and summary["bf16"]
    assert "skipping checkpoint" in (tmp_path / LOG_FILE).read_text()
    steps = [r["step"] for r in _metrics(tmp_path)]
    resumed = int(last_complete.split("-")[1])
    assert steps[-(total - resumed):] == list(range(resumed + 1, total + 1))  # the counter continued
    kept = [p.name for p in list_checkpoints(tmp_path / "checkpoints")]
    assert kept[:2] == [tag_for(total), tag_for(total - 2)]  # keep-last 2 valid ones...
    assert corrupt.name in kept  # ...and the corrupt one is left for a person (so may be one the kill cut short)
    _assert_exported(tmp_path, tiny_model_dir)


# ---- no DeepSpeed: data, replay, checkpoint bookkeeping, launch commands ----------------------------------------


def _examples(lengths: list[int]) -> list[Example]:
    return [Example(list(range(1, n + 1)), [IGNORE_INDEX] * (n // 2) + list(range(n // 2 + 1, n + 1))) for n in lengths]


def test_plan_is_deterministic_length_grouped_and_sharded() -> None:
    lengths = [random.Random(i).randint(5, 300) for i in range(200)]
    plan = plan_epoch(lengths, micro_batch_size=4, seed=3, epoch=0, group_size=4)
    assert plan == plan_epoch(lengths, micro_batch_size=4, seed=3, epoch=0, group_size=4)
    assert plan != plan_epoch(lengths, micro_batch_size=4, seed=3, epoch=1, group_size=4)
    assert len(plan) % 4 == 0 and all(len(b) == 4 for b in plan)
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in plan) / len(plan)
    assert spread < 40  # grouped: random batches would spread ~150 tokens

    examples = _examples(lengths)
    one = MicroBatches(examples, 4, 4, 1, 0, 3, 0)
    ranks = [MicroBatches(examples, 4, 2, 2, r, 3, 0) for r in range(2)]
    for (pos1, mb1), (pos_a, mb_a), (_, mb_b) in zip(one.iter_steps(0), ranks[0].iter_steps(0), ranks[1].iter_steps(0)):
        assert pos1 == pos_a
        ids1 = sorted(tuple(t.tolist()) for b in mb1 for t in b["input_ids"])
        ids2 = sorted(tuple(t.tolist()) for b in mb_a + mb_b for t in b["input_ids"])
        assert ids1 == ids2


def test_a_curriculum_plans_the_flagged_examples_first() -> None:
    lengths = [random.Random(i).randint(5, 300) for i in range(200)]
    flags = [i % 5 == 0 for i in range(200)]  # 40 flagged: 10 micro-batches of 4
    plan = plan_epoch(lengths, micro_batch_size=4, seed=3, epoch=0, group_size=2, first=flags)
    assert all(flags[i] for b in plan[:10] for i in b)
    assert not any(flags[i] for b in plan[10:] for i in b)
    assert len({i for b in plan for i in b}) == sum(len(b) for b in plan)
    unflagged = plan_epoch(lengths, micro_batch_size=4, seed=3, epoch=0, group_size=2, first=[False] * 200)
    assert unflagged == plan_epoch(lengths, micro_batch_size=4, seed=3, epoch=0, group_size=2)


def test_load_examples_flags_the_kinds_asked_first(tmp_path: Path) -> None:
    from datasets import Dataset, DatasetDict

    rows = {"input_ids": [[1, 2], [3, 4], [5, 6]], "labels": [[-100, 2], [-100, 4], [-100, 6]],
            "case_kind": ["single_breach", "drill", "compliant"]}
    DatasetDict({"train": Dataset.from_dict(rows)}).save_to_disk(str(tmp_path / "ds"))
    assert [e.first for e in load_examples(tmp_path / "ds", "train", ("drill",))] == [False, True, False]
    assert not any(e.first for e in load_examples(tmp_path / "ds", "train"))
    DatasetDict({"train": Dataset.from_dict({k: rows[k] for k in ("input_ids", "labels")})}).save_to_disk(
        str(tmp_path / "bare"))
    with pytest.raises(DataError, match="case_kind"):
        load_examples(tmp_path / "bare", "train", ("drill",))


def test_resume_from_data_position() -> None:
    stream = MicroBatches(_examples([10 + i for i in range(40)]), 2, 2, 1, 0, 0, 0)
    full = list(stream.iter_steps(1))
    position = full[2][0]
    rest = list(stream.iter_steps(1, position))
    assert [p for p, _ in rest] == [p for p, _ in full[3:]]
    assert torch.equal(rest[0][1][0]["input_ids"], full[3][1][0]["input_ids"])
    with pytest.raises(DataError, match="boundary"):
        next(stream.iter_steps(1, 1))


def test_collate_pads_and_masks() -> None:
    batch = collate(_examples([4, 7]), pad_token_id=99)
    assert batch["input_ids"].shape == (2, 7)
    assert batch["input_ids"][0, 4:].tolist() == [99, 99, 99]
    assert batch["labels"][0].tolist() == [-100, -100, 3, 4, -100, -100, -100]
    assert batch["attention_mask"].sum().item() == 11


def test_replay_tokenised_like_the_domain_and_mixed_by_tokens(tokenizer_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    jsonl = tmp_path / "replay.jsonl"
    jsonl.write_text("\n".join(json.dumps({"prompt": f"Name a colour #{i}.", "answer": "Blue."}) for i in range(5)))
    (tmp_path / "general.json").write_text(json.dumps({"replay": [{"prompt": "Hi", "answer": "Hello."}]}))
    assert len(read_replay_pairs(jsonl)) == 5 and len(read_replay_pairs(tmp_path / "general.json")) == 1
    ex = tokenize_pair(tok, "Name a colour.", "Blue.")
    answer = [t for t in ex.labels if t != IGNORE_INDEX]
    assert tok.decode(answer) == "Blue." + tok.eos_token
    assert ex.input_ids[-len(answer):] == answer and ex.labels[0] == IGNORE_INDEX
    domain = _examples([40] * 30)  # 20 label tokens each
    mixed, added = mix_replay(domain, [ex] * 3, fraction=0.2, seed=0)
    replay_tokens = added * len(answer)
    assert replay_tokens / (replay_tokens + 600) == pytest.approx(0.2, abs=0.02)
    assert mix_replay(domain, [ex], fraction=0.0, seed=0) == (domain, 0)
    (tmp_path / "bad.jsonl").write_text('{"prompt": "x"}\n')
    with pytest.raises(DataError, match="answer"):
        read_replay_pairs(tmp_path / "bad.jsonl")


def _fake_checkpoint(ckpt_dir: Path, step: int, *, complete: bool = True) -> Path:
    folder = ckpt_dir / tag_for(step)
    folder.mkdir(parents=True)
    (folder / "mp_rank_00_model_states.pt").write_bytes(b"x" * 100)
    if complete:
        marker = {"step": step, "epoch": 0, "position": step, "world_size": 1, "rng": [""],
                  "files": {"mp_rank_00_model_states.pt": 100}}
        (folder / MARKER).write_text(json.dumps(marker))
    return folder


def test_latest_complete_skips_incomplete_and_corrupt(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert find_latest_complete(tmp_path / "none") is None
    _fake_checkpoint(tmp_path, 2)
    good = _fake_checkpoint(tmp_path, 4)
    _fake_checkpoint(tmp_path, 6, complete=False)
    truncated = _fake_checkpoint(tmp_path, 8)
    (truncated / "mp_rank_00_model_states.pt").write_bytes(b"x" * 10)
    (tmp_path / ".tmp-step-00000010").mkdir()
    with caplog.at_level(logging.WARNING, logger="training.checkpoints"):
        folder, marker = find_latest_complete(tmp_path)
    assert folder == good and marker["step"] == 4
    assert "10 bytes" in caplog.text and "no COMPLETE.json" in caplog.text
    with pytest.raises(CheckpointError):
        read_complete(truncated)
    prune_checkpoints(tmp_path, keep_last=1)
    assert not (tmp_path / ".tmp-step-00000010").exists() and not (tmp_path / tag_for(2)).exists()
    assert good.exists() and truncated.exists()  # only valid checkpoints count towards keep-last


def test_launch_commands(tmp_path: Path) -> None:
    spec = tmp_path / "s.json"
    cmd = build_launch_command(spec_path=spec, nproc=1, python="py")
    assert cmd == ["py", "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1", "-m",
                   "training.full_ft", "--spec", str(spec)]
    multi = build_launch_command(spec_path=spec, nproc=8, num_nodes=4, master_addr="10.0.0.1", python="py")
    assert "--rdzv_endpoint" in multi and "10.0.0.1:29500" in multi and "--standalone" not in multi
    ds = build_launch_command(spec_path=spec, nproc=8, launcher="deepspeed", hostfile=tmp_path / "hosts",
                              num_nodes=2, master_addr="node1", python="/venv/bin/python")
    assert ds[:3] == ["/venv/bin/deepspeed", "--num_gpus", "8"]
    assert ds[ds.index("--hostfile") + 1] == str(tmp_path / "hosts") and ds[ds.index("--num_nodes") + 1] == "2"
    assert ds[-4:] == ["--module", "training.full_ft", "--spec", str(spec)]
    with pytest.raises(ConfigError):
        build_launch_command(spec_path=spec, nproc=2, num_nodes=2)  # no master address
    env = launch_env(nproc=2, extra={"X": "1"})
    assert env["X"] == "1" and env["TORCH_EXTENSIONS_DIR"]


def test_spec_json_round_trip(tmp_path: Path) -> None:
    spec = TrainSpec(model_dir="m", dataset_dir="d", output_dir="o", ds_config={"a": 1}, max_steps=3)
    assert TrainSpec.load(spec.save(tmp_path / "s.json")) == spec
    with pytest.raises(ConfigError, match="bogus"):
        TrainSpec.from_json(json.dumps({"model_dir": "m", "bogus": 1}))


def test_the_learning_rate_has_one_source() -> None:
    """The peak learning rate reaches the engine through the DeepSpeed config infra_check wrote, nowhere else."""
    cfg = build_deepspeed_config(micro_batch_size=2, grad_accum_steps=1, world_size=1, zero_stage=2, lr=7e-5,
                                 on_cpu=True)
    assert TrainSpec(model_dir="m", dataset_dir="d", output_dir="o", ds_config=cfg).lr == 7e-5
    with pytest.raises(TypeError):
        TrainSpec(model_dir="m", dataset_dir="d", output_dir="o", ds_config=cfg, lr=1e-3)  # no second channel
    with pytest.raises(ConfigError, match="optimizer.params.lr"):
        TrainSpec(model_dir="m", dataset_dir="d", output_dir="o", ds_config={"optimizer": {}}).lr


def test_one_cpu_rank_skips_the_shm_op_build(monkeypatch: pytest.MonkeyPatch) -> None:
    """A single CPU rank does not JIT-build DeepSpeed's shared-memory all-reduce (34 s of C++ on 2 cores)."""
    import deepspeed.ops
    from deepspeed.ops.op_builder.cpu import ShareMemCommBuilder

    from training.full_ft import skip_shm_op_for_one_rank

    table = deepspeed.ops.__compatible_ops__
    monkeypatch.setitem(table, ShareMemCommBuilder.NAME, True)
    monkeypatch.setenv("WORLD_SIZE", "2")
    skip_shm_op_for_one_rank()
    assert table[ShareMemCommBuilder.NAME] is True  # two ranks all-reduce through it
    monkeypatch.setenv("WORLD_SIZE", "1")
    skip_shm_op_for_one_rank()
    assert table[ShareMemCommBuilder.NAME] is False


def test_freed_memory_is_kept_for_reuse(monkeypatch: pytest.MonkeyPatch) -> None:
    """glibc takes both malloc settings, for a block or for good; FINETUNE_MALLOC_REUSE=0 leaves malloc alone."""
    import resource

    from foundation.memory_reuse import keep_freed_memory, reusing_freed_memory

    monkeypatch.setenv("FINETUNE_MALLOC_REUSE", "1")  # whatever this machine's RAM would choose

    def faults_of_a_step() -> int:
        """A training step's pattern: a 64 MB block freed while a later one lives, then 64 MB again."""
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        big, small = torch.ones(16 * 2**20), torch.ones(2**18)
        del big
        again = torch.ones(16 * 2**20)
        del again, small
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    with reusing_freed_memory() as taken:
        assert taken is True
        steps = [faults_of_a_step() for _ in range(4)]
    # glibc's defaults map each 64 MB block afresh: 16,384 faults apiece; kept for reuse, none once warm.
    assert min(steps) < 1000, steps
    with pytest.raises(RuntimeError), reusing_freed_memory():
        raise RuntimeError("the settings are restored on an error too")
    monkeypatch.setenv("FINETUNE_MALLOC_REUSE", "0")
    assert keep_freed_memory() is False
    with reusing_freed_memory() as taken:
        assert taken is False


def test_a_machine_with_less_memory_gets_the_lean_setting_by_itself() -> None:
    """The demo peaked at 17.8 GB with freed memory kept (9.9 GB without): below 20 GB of usable RAM the setting
    is off without anyone setting a variable, and the reason is one line for the run's summary."""
    from foundation.memory_reuse import REUSE_NEEDS_GB, reuse_decision, usable_ram_gb

    on, why = reuse_decision({}, ram_gb=24.0)
    assert on and why.startswith("on (faster steps): 24 GB RAM")
    off, why = reuse_decision({}, ram_gb=16.0)
    assert not off and why.startswith("off (leaner, slower steps): 16 GB RAM < the 20 GB")
    assert reuse_decision({"FINETUNE_MALLOC_REUSE": "1"}, ram_gb=8.0) == (True, "on: set by FINETUNE_MALLOC_REUSE=1")
    assert reuse_decision({"FINETUNE_MALLOC_REUSE": "0"}, ram_gb=64.0)[0] is False
    ram = usable_ram_gb()
    assert ram is not None and ram > 0
    assert reuse_decision({})[0] is (ram >= REUSE_NEEDS_GB)


def _agents_of(parent: int, marker: str) -> list[int]:
    """Pids of ``parent``'s child processes whose command line holds ``marker``, oldest first."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent and marker in cmd:
            found.append(int(entry.name))
    return sorted(found)


def test_two_nodes_match_one_node_and_survive_a_lost_node(tiny_model_dir: Path, dataset_dir: Path,
                                                          tmp_path: Path) -> None:
    """Two torch elastic agents of one rank each meet at a c10d rendezvous on 127.0.0.1 (two nodes rehearsed on one
    machine, the real DeepSpeed engine on gloo): the loss curve is one node of two ranks' on the same data and seed.
    Node 1's agent is killed after a checkpoint: the run fails naming the lost node, the next call (the flow's retry)
    resumes from the last complete checkpoint, finishes on the same curve and exports a loadable model."""
    import threading

    total = 12  # 48 rows / (4 per micro-batch x 2 ranks): two epochs
    kw = dict(stage=2, accum=1, world=2, max_steps=total, epochs=2, checkpoint_every_steps=2, keep_last_checkpoints=2)
    one, two = tmp_path / "one-node", tmp_path / "two-nodes"
    run_training(_spec(tiny_model_dir, dataset_dir, one, **kw), nproc=2)
    reference = {r["step"]: r["loss"] for r in _metrics(one)}

    spec = _spec(tiny_model_dir, dataset_dir, two, **kw)
    failure: list[BaseException] = []

    def first_attempt() -> None:
        try:
            run_training(spec, nproc=1, num_nodes=2, local_nodes=True)
        except TrainingError as err:
            failure.append(err)

    attempt = threading.Thread(target=first_attempt)
    attempt.start()
    deadline = time.time() + 300
    while not (two / "checkpoints" / tag_for(4) / MARKER).is_file():
        assert attempt.is_alive() and time.time() < deadline, (two / LOG_FILE).read_text()[-3000:]
        time.sleep(0.2)
    agents = _agents_of(os.getpid(), "torch.distributed.run")
    assert len(agents) == 2
    os.killpg(agents[1], signal.SIGKILL)  # node 1 is lost
    attempt.join(timeout=300)
    assert not attempt.is_alive() and failure, "the run went on without node 1"
    assert "[node 0]" in (two / LOG_FILE).read_text() and "--rdzv_backend c10d" in str(failure[0])
    assert not (two / "model").exists()

    summary = run_training(spec, nproc=1, num_nodes=2, local_nodes=True)  # the retry
    assert summary["world_size"] == 2 and summary["steps"] == total
    resumed = int(summary["resumed_from"].split("-")[1])
    assert resumed >= 4
    curve = {r["step"]: r["loss"] for r in _metrics(two)}  # a step run twice keeps its last record
    assert sorted(curve) == list(range(1, total + 1))
    for step, loss in curve.items():
        assert loss == pytest.approx(reference[step], rel=1e-4), (step, loss, reference[step])
    _assert_exported(two, tiny_model_dir)
