"""Several processes: the experiment scripts as 2 processes × 2 host CPU devices on 127.0.0.1.

The slow tests launch a tiny ``clip_finetune`` and a tiny ``scan`` run as two processes joined by
``jax.distributed`` (explicit ``--coordinator/--num-processes/--process-id`` flags, a free
loopback port, :func:`experiments._launch.launch` with a deadline that kills the children) and
compare them with the same run as one process × 4 devices (in this pytest process, which has 8
host CPU devices): losses, curves and trained parameters equal to round-off; only process 0
wrote the run's files (every file a process opens for writing is recorded by an audit hook);
deleting the newest checkpoint and rerunning resumes and ends equal to the uninterrupted run.
"""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest

from equijax.training import (
    data_mesh,
    gather_local_rows,
    local_rows,
    put_global_batch,
    replicate,
    resume_or_start,
)
from equijax.training.parallel import check_distributed_args
from experiments._launch import launch

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 400  # seconds per launched job; the children are killed after it

# Records every file a process opens for writing, renames or removes under $EQUIJAX_AUDIT_ROOT
# into $EQUIJAX_AUDIT_LOG.<process id>, from Python's audit events.
# (TensorStore's own C++ writes of orbax's per-process checkpoint shards are not seen.)
AUDIT_HOOK = textwrap.dedent('''
    import os, sys

    _root = os.environ.get("EQUIJAX_AUDIT_ROOT")
    if _root:
        _pid = sys.argv[sys.argv.index("--process-id") + 1] if "--process-id" in sys.argv else "0"
        _fd = os.open(os.environ["EQUIJAX_AUDIT_LOG"] + "." + _pid,
                      os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        _WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

        def _record(event, path):
            if isinstance(path, bytes):
                path = path.decode(errors="replace")
            if isinstance(path, (str, os.PathLike)):
                path = os.path.abspath(os.fspath(path))
                if path.startswith(_root):
                    os.write(_fd, f"{event} {path}\\n".encode())

        def _hook(event, args):
            if event == "open":
                path, mode, flags = args
                if (mode and any(c in mode for c in "wax+")) or (not mode and flags & _WRITE):
                    _record("write", path)
            elif event in ("os.rename", "os.remove", "shutil.rmtree"):
                _record(event, args[0])

        sys.addaudithook(_hook)
''')


def launch_two(tmp_path: Path, args: list[str], name: str):
    """``python -m <args>`` as 2 processes × 2 devices; asserts both exit 0."""
    hook = tmp_path / "hook"
    hook.mkdir(exist_ok=True)
    (hook / "sitecustomize.py").write_text(AUDIT_HOOK)
    audit = tmp_path / f"audit-{name}"
    env = {"PYTHONPATH": f"{hook}:{ROOT}", "EQUIJAX_AUDIT_ROOT": str(tmp_path / "runs"),
           "EQUIJAX_AUDIT_LOG": str(audit), "HF_HUB_OFFLINE": "1"}  # fmt: skip
    results = launch(["-m", *args], processes=2, devices_per_process=2, timeout=TIMEOUT,
                     log_dir=tmp_path / f"logs-{name}", env=env, cwd=ROOT)  # fmt: skip
    for r in results:
        assert r.returncode == 0, f"process {r.process_id} exit {r.returncode}:\n{r.stderr[-3000:]}"
    assert "it/s" not in results[1].stderr and "s/it" not in results[1].stderr  # no 2nd bar
    return [_written(Path(f"{audit}.{i}")) for i in range(2)]


def _written(log: Path) -> set[str]:
    return set(log.read_text().splitlines()) if log.is_file() else set()


def assert_one_writer(writes: list[set[str]], out: Path, run_files: list[str]) -> None:
    """Process 0 wrote ``run_files``; process 1 wrote nothing of the run (orbax's shard files
    under ``checkpoints/`` excepted, but not the run file ``equijax_run.json``)."""
    ours = {line.split(" ", 1)[1] for line in writes[0]}
    for f in run_files:
        assert str(out / f) in ours, f"process 0 did not write {f}: {sorted(ours)[:20]}"
    theirs = [line for line in writes[1]
              if "/checkpoints/" not in line or "equijax_run.json" in line]  # fmt: skip
    assert not theirs, f"process 1 wrote {theirs[:10]}"


def restore_numpy(state_dir: Path) -> dict:
    """A checkpoint item as NumPy arrays (onto one device, whatever its saved sharding)."""
    import orbax.checkpoint as ocp

    ckptr = ocp.StandardCheckpointer()
    tree = ckptr.metadata(state_dir).item_metadata
    dev = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=dev), tree)
    return jax.tree.map(np.asarray, ckptr.restore(state_dir, target))


def assert_trees_close(a, b, rtol=1e-5, atol=1e-6):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert jax.tree.structure(a) == jax.tree.structure(b) and la
    for x, y in zip(la, lb, strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


# ---- fast checks (no launch) ----------------------------------------------------------------


def test_explicit_start_up_arguments_are_validated_with_the_flag_named():
    check_distributed_args()  # automatic detection
    check_distributed_args("10.0.0.1:1234", 4, 3)
    with pytest.raises(ValueError, match=r"num_processes \(--num-processes\), process_id"):
        check_distributed_args("127.0.0.1:1234")
    with pytest.raises(ValueError, match="must be HOST:PORT"):
        check_distributed_args("127.0.0.1", 2, 0)
    with pytest.raises(ValueError, match="must be HOST:PORT"):
        check_distributed_args("127.0.0.1:99999", 2, 0)
    with pytest.raises(ValueError, match="--num-processes"):
        check_distributed_args("127.0.0.1:1234", 0, 0)
    with pytest.raises(ValueError, match=r"process_id=2 \(--process-id\) must be in \[0, 2\)"):
        check_distributed_args("127.0.0.1:1234", 2, 2)


def test_script_flags_set_distributed_and_refuse_incomplete_or_threaded_runs(capsys):
    from experiments import clip_finetune, scan

    flags = ["--coordinator", "127.0.0.1:1234", "--num-processes", "2", "--process-id", "1"]
    s, a = scan._parse(["--quick", *flags])
    assert s.distributed and s.jobs == 1 and (a.num_processes, a.process_id) == (2, 1)
    _, f = clip_finetune.parse_args(["--quick", *flags])
    assert f.distributed and f.coordinator == "127.0.0.1:1234"
    for module, argv, words in (
        (scan, ["--coordinator", "h:1", "--num-processes", "2"], "process_id (--process-id)"),
        (clip_finetune, [*flags[:4], "--process-id", "5"], "must be in [0, 2)"),
        (scan, ["--distributed", "--jobs", "2"], "--jobs must be 1"),
    ):
        with pytest.raises(SystemExit) as exc:
            module.main(argv)
        err = capsys.readouterr().err
        assert exc.value.code == 2 and words in err and len(err.strip().splitlines()) == 1


def test_launcher_kills_the_other_processes_when_one_fails(tmp_path):
    code = "import sys, time; sys.exit(3) if sys.argv[-1] == '0' else time.sleep(600)"
    results = launch(["-c", code], processes=2, timeout=120, log_dir=tmp_path)
    assert [r.returncode for r in results] == [3, None]  # process 1 killed, not waited for


def test_evaluation_rows_are_kept_local_and_gathered_once_in_global_order():
    mesh = data_mesh(4)
    chunks = [np.arange(8) + 8 * c for c in range(3)]
    local = [local_rows(put_global_batch(c, mesh), mesh) for c in chunks]
    np.testing.assert_array_equal(gather_local_rows(local, 8, mesh), np.arange(24))
    # A replicated array: this process's rows of it, all of them here.
    np.testing.assert_array_equal(local_rows(replicate(np.arange(8), mesh), mesh), np.arange(8))


def test_checkpoints_restore_onto_the_target_shardings_on_another_device_count(tmp_path):
    big, small = data_mesh(4), data_mesh(2)
    state = {"w": replicate(np.arange(6.0), big), "k": replicate(jax.random.key_data(
        jax.random.key(3)), big)}  # fmt: skip
    with resume_or_start(tmp_path, {"a": 1}, state) as run:
        run.save(1, state, [])
    target = replicate(jax.tree.map(np.zeros_like, state), small)
    with resume_or_start(tmp_path, {"a": 1}, target) as run:
        assert run.step == 1 and run.state["w"].sharding == target["w"].sharding
        assert_trees_close(run.state, state)


# ---- 2 processes × 2 devices vs 1 process × 4 devices -----------------------------------------

CLIP_ARGS = ["--model", "tiny-random", "--mock-data", "--quick", "--stage1-steps", "2",
             "--stage2-steps", "2", "--eval-every", "2", "--batch-size", "8", "--train-limit",
             "16", "--eval-limit", "8", "--lambda-trainable", "--lr-model", "0.01"]  # fmt: skip
SCAN_ARGS = ["--quick", "--splits", "add_jump", "--pretrain-examples", "64", "--batch-size", "16",
             "--lambda-steps", "1", "--finetune-steps", "0", "--eval-limit", "16",
             "--eval-batch", "16"]  # fmt: skip


@pytest.mark.slow
def test_clip_finetune_two_processes_equal_one_process_and_resume(tmp_path):
    import flax.serialization

    from experiments import clip_finetune

    two, one = tmp_path / "runs" / "two", tmp_path / "one"
    writes = launch_two(tmp_path, ["experiments.clip_finetune", *CLIP_ARGS, "--out", str(two)],
                        "run")  # fmt: skip
    assert_one_writer(writes, two, ["results.json", "results.md", "curves.png",
                                    "lambda_rot90.msgpack", "checkpoints/equijax_run.json"])
    clip_finetune.main([*CLIP_ARGS, "--devices", "4", "--out", str(one)])

    def outputs(out: Path):
        res = json.loads((out / "results.json").read_text())
        lam = flax.serialization.msgpack_restore((out / "lambda_rot90.msgpack").read_bytes())
        return res["curve"], res["loss"], lam, restore_numpy(out / "checkpoints" / "4" / "state")

    expected = outputs(one)
    got = outputs(two)
    assert [s for s, _ in got[0]] == [0, 2, 4] and got[1]
    assert_trees_close(got, expected)
    before = restore_numpy(one / "checkpoints" / "2" / "state")["state"]["model"]
    moved = jax.tree.leaves(jax.tree.map(lambda a, b: float(np.abs(a - b).max()),
                                         expected[3]["state"]["model"], before))  # fmt: skip
    assert max(moved) > 1e-4  # stage 2 trained the tower: not a comparison of initial values
    # Resume: delete the newest checkpoint (step 4) and rerun the 2-process job.
    shutil.rmtree(two / "checkpoints" / "4")
    writes = launch_two(tmp_path, ["experiments.clip_finetune", *CLIP_ARGS, "--out", str(two)],
                        "resume")  # fmt: skip
    assert_one_writer(writes, two, ["results.json", "lambda_rot90.msgpack"])
    assert_trees_close(outputs(two), expected)


@pytest.mark.slow
def test_scan_two_processes_equal_one_process_and_resume_on_another_count(tmp_path):
    from experiments import scan

    two, one = tmp_path / "runs" / "two", tmp_path / "one"
    ckpt = Path("checkpoints") / "add_jump-lstm-s0"
    writes = launch_two(tmp_path, ["experiments.scan", *SCAN_ARGS, "--out", str(two)], "run")
    assert_one_writer(writes, two, ["results.json", "results.md", "results.png",
                                    f"{ckpt}/equijax_run.json"])  # fmt: skip
    scan.main([*SCAN_ARGS, "--devices", "4", "--out", str(one)])

    def outputs(out: Path):
        res = json.loads((out / "results.json").read_text())["results"]["add_jump"]["lstm"]["0"]
        accs = {k: (v["val"], v["test"]) for k, v in res["zero_shot"].items()}
        return res["pretrain"]["history"], accs, restore_numpy(out / ckpt / "4" / "state")

    expected = outputs(one)
    got = outputs(two)
    assert [h["step"] for h in got[0]] == [1, 2, 3, 4]
    assert_trees_close(got, expected)
    # Resume the 2-process checkpoint in one process × 4 devices (another process count):
    # delete the newest step, rerun; pretraining continues from step 3 and ends equal.
    third = tmp_path / "three"
    shutil.copytree(two, third)
    shutil.rmtree(third / ckpt / "4")
    res = scan.main([*SCAN_ARGS, "--devices", "4", "--out", str(third)])
    assert res["add_jump"]["lstm"]["0"]["pretrain"]["resumed_from_step"] == 3
    assert_trees_close(outputs(third), expected)


@pytest.mark.slow
def test_clip_zeroshot_two_processes_count_like_one_device(tmp_path):
    from experiments import clip_zeroshot

    args = ["--model", "tiny-random", "--mock-data", "--limit", "20", "--batch-size", "8"]
    two, one = tmp_path / "runs" / "two", tmp_path / "one"
    # --group-devices 2: each orbit is split over the two processes (the mesh's "group" axis
    # spans the hosts), the batch over each process's two devices.
    writes = launch_two(tmp_path, ["experiments.clip_zeroshot", *args, "--group-devices", "2",
                                   "--out", str(two)], "zs")  # fmt: skip
    assert_one_writer(writes, two, ["results.json", "results.md", "accuracy.png"])
    expected = clip_zeroshot.main([*args, "--out", str(one)])  # one process, one device
    got = json.loads((two / "results.json").read_text())
    assert got["processes"] == 2 and got["devices"] == 4 and got["n_images"] == 20
    assert got["group_devices"] == 2
    # 20 images in batches of 8: the padded rows of the last batch are not counted.
    assert got["accuracy"] == expected["accuracy"]


# ---- the scripts that compute identically in every process (one writer) ---------------------

SCAN_PAPER_ARGS = ["--preset", "tiny", "--splits", "add_jump", "--seeds", "0", "1",
                   "--iterations", "20", "--eval-every", "10", "--hidden", "8",
                   "--eval-limit", "16", "--eval-batch", "16"]  # fmt: skip
CNN_ARGS = ["--quick", "--seeds", "1", "--epochs", "1", "--n-test", "200",
            "--pretrain-epochs", "1", "--methods", "equitune,lambda_equitune"]  # fmt: skip


@pytest.mark.slow
def test_scan_paper_two_processes_equal_one_process_and_resume(tmp_path):
    from experiments import scan_paper

    two, one = tmp_path / "runs" / "two", tmp_path / "one"
    ckpt = Path("checkpoints") / "lstm"
    cmd = ["experiments.scan_paper", *SCAN_PAPER_ARGS, "--out", str(two)]
    writes = launch_two(tmp_path, cmd, "run")
    assert_one_writer(writes, two, ["results.json", "results.md", f"{ckpt}/equijax_run.json"])
    scan_paper.main([*SCAN_PAPER_ARGS, "--out", str(one)])  # one process

    def outputs(out: Path):
        res = json.loads((out / "results.json").read_text())
        return res["results"], res["best_step"], restore_numpy(out / ckpt / "20" / "state")

    expected = outputs(one)
    got = outputs(two)
    assert_trees_close(got, expected)
    # Resume: delete the newest checkpoint (iteration 20) and rerun the 2-process job.
    shutil.rmtree(two / ckpt / "20")
    writes = launch_two(tmp_path, cmd, "resume")
    assert_one_writer(writes, two, ["results.json"])
    assert_trees_close(outputs(two), expected)


@pytest.mark.slow
def test_cnn_rot90_two_processes_equal_one_process(tmp_path):
    from experiments import cnn_rot90

    two, one = tmp_path / "runs" / "two", tmp_path / "one"
    writes = launch_two(tmp_path, ["experiments.cnn_rot90", *CNN_ARGS, "--out", str(two)], "run")
    assert_one_writer(writes, two, ["results.json", "results.md", "curves.png",
                                    "checkpoints/pretrain/equijax_run.json"])  # fmt: skip
    expected = cnn_rot90.main([*CNN_ARGS, "--out", str(one)])
    got = json.loads((two / "results.json").read_text())
    assert set(got["curves"]) == {"equitune", "lambda_equitune"}
    assert_trees_close(got["curves"], expected["curves"])
    assert_trees_close(restore_numpy(two / "checkpoints" / "pretrain" / "1" / "state"),
                       restore_numpy(one / "checkpoints" / "pretrain" / "1" / "state"))  # fmt: skip


@pytest.mark.slow
def test_continuous_rotations_two_processes_equal_one_process(tmp_path):
    from experiments import continuous_rotations

    two, one = tmp_path / "runs" / "two", tmp_path / "one"
    writes = launch_two(tmp_path, ["experiments.continuous_rotations", "--tiny", "--out",
                                   str(two)], "run")  # fmt: skip
    assert_one_writer(writes, two, ["results.json", "results.md", "rotations.png"])
    expected = continuous_rotations.main(["--tiny", "--out", str(one)])
    got = json.loads((two / "results.json").read_text())

    def values(per_seed):  # everything but the timings
        return [{m: {k: v for k, v in r.items() if k != "ms_per_image"} if isinstance(r, dict)
                 else r for m, r in seed.items()} for seed in per_seed]  # fmt: skip

    assert len(got["per_seed"]) == 1 and "canonical_lambda_equitune" in got["per_seed"][0]
    assert_trees_close(values(got["per_seed"]), values(json.loads(json.dumps(
        expected["per_seed"]))), rtol=1e-4, atol=1e-5)  # fmt: skip


@pytest.mark.parametrize("module, argv", [("dqn", ["--env", "gridworld"]), ("nlg_fairness", [])])
def test_one_device_scripts_refuse_several_processes_in_one_line(module, argv, capsys):
    import importlib

    main = importlib.import_module(f"experiments.{module}").main
    for flags in (
        ["--distributed"],
        ["--coordinator", "127.0.0.1:1234", "--num-processes", "2", "--process-id", "0"],
    ):
        with pytest.raises(SystemExit) as exc:
            main([*argv, *flags])
        err = capsys.readouterr().err
        assert exc.value.code == 2 and "on one device" in err
        assert flags[0] in err and len(err.strip().splitlines()) == 1
