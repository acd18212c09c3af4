"""Scale features that change how a step is computed but not what it computes."""

import jax
import numpy as np
import pytest

from jaxft import peft
from jaxft.data import batching
from jaxft.errors import UserError
from jaxft.train import experiment, loop, optim, step
from jaxft.train import state as state_lib
from jaxft.train.writer import read_metrics
from tests.conftest import needs_torch, tiny_config

NO_DROPOUT = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}


def _run_steps(exp, config, accum_steps, strategy="full", steps=5):
    params, mask = peft.apply(exp.params, strategy, jax.random.key(1))
    tx, _ = optim.make(config.optim, peft.paths.split(params, mask)[0], total_steps=steps)
    state = state_lib.create(params, mask, tx, jax.random.key(0))
    train_step = jax.jit(step.make_train_step(exp.model, tx, accum_steps=accum_steps))
    losses = []
    batches = batching.batches(exp.data["train"], 32, exp.buckets, 0, True, config.seed, 0)
    for _, (_, batch) in zip(range(steps), batches, strict=False):
        # Padding rows (weight 0) fill part of the last micro-batch: a mean of per-micro-batch
        # means would weight its 3 real rows like the 8 of the others; the sums must not.
        batch["weights"][-5:] = 0.0
        state, metrics = train_step(state, batch)
        losses.append(float(metrics["loss"]))
    return np.asarray(losses), state


@needs_torch
@pytest.mark.parametrize("strategy", ["full", "lora"])
def test_gradient_accumulation_4x8_equals_one_batch_of_32(
    tiny_model_dir, sentiment_files, strategy
):
    config = tiny_config(tiny_model_dir, sentiment_files)
    config.model_config = dict(NO_DROPOUT)  # dropout masks differ per micro-batch by design
    config.strategy.lora.dropout = 0.0
    exp = experiment.prepare(config, splits=["train"])
    exp.model = loop.with_strategy(exp.model, config.strategy)
    losses_big, big = _run_steps(exp, config, 1, strategy)
    losses_acc, acc = _run_steps(exp, config, 4, strategy)
    np.testing.assert_allclose(losses_acc, losses_big, atol=1e-5)
    leaves = zip(
        jax.tree_util.tree_leaves(acc.params), jax.tree_util.tree_leaves(big.params), strict=True
    )
    for a, b in leaves:
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_accumulation_must_divide_the_batch():
    from jaxft import config as config_lib

    c = config_lib.defaults()
    c.train.batch_size, c.train.grad_accum_steps = 32, 5
    with pytest.raises(UserError, match="batch_size=32 must split into train.grad_accum_steps=5"):
        config_lib.validate(c)


@needs_torch
def test_a_non_finite_loss_stops_the_run_with_a_clear_error(
    tiny_model_dir, sentiment_files, tmp_path
):
    config = tiny_config(tiny_model_dir, sentiment_files)
    config.optim.lr = 1e30  # overflows the weights within a few steps
    config.optim.clip_norm = 0.0
    config.train.log_every = 1
    with pytest.raises(UserError, match=r"non-finite loss or gradient at step \d+"):
        loop.train_and_evaluate(config, tmp_path)


def _train_command(model_dir, files, workdir, **extra):
    import sys

    args = [sys.executable, "-m", "jaxft", "train", "experiments/rotten_tomatoes.py"]
    args += ["--workdir", str(workdir), f"--config.model={model_dir}"]
    settings = {
        "data.source": "files",
        "data.max_length": 32,
        "data.buckets": "16,32",
        "optim.lr": 2e-3,
        "train.batch_size": 16,
        "train.epochs": 5,
        "train.log_every": 5,
        "train.progress": "false",
        "train.checkpoint_every": 10,
        "train.eval_splits": "test",
        **{f"data.files.{split}": path for split, path in files.items()},
        **extra,
    }
    return args + [f"--config.{k}={v}" for k, v in settings.items()]


def _wait_for_state(workdir, process, at_least: int, timeout: float = 240.0):
    """Wait until a resumable checkpoint of step >= at_least is complete on disk."""
    import time

    deadline = time.time() + timeout
    while time.time() < deadline:
        steps = [
            int(p.name)
            for p in (workdir / "train_state").glob("*")
            if p.name.isdigit() and (p / "_CHECKPOINT_METADATA").exists()
        ]
        if steps and max(steps) >= at_least:
            return max(steps)
        assert process.poll() is None, process.communicate()
        time.sleep(0.05)
    raise AssertionError("no checkpoint appeared in time")


@needs_torch
def test_killed_and_preempted_runs_resume_to_bitwise_equal_params(
    tiny_model_dir, sentiment_files, tmp_path
):
    import signal
    import subprocess

    from jaxft.train import inference

    reference, interrupted = tmp_path / "reference", tmp_path / "interrupted"
    subprocess.run(
        _train_command(tiny_model_dir, sentiment_files, reference), check=True, timeout=300
    )
    command = _train_command(tiny_model_dir, sentiment_files, interrupted)
    # SIGKILL: nothing runs after it, the last complete checkpoint is all that survives.
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _wait_for_state(interrupted, process, 20)
    process.send_signal(signal.SIGKILL)
    process.wait()
    # SIGTERM (a preemption notice): the run saves where it is and exits 0.
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_state(interrupted, process, 50)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    assert "preempted at step" in out and "rerun the same command to resume" in out
    assert "resuming from" in err
    # The same command once more finishes the run.
    subprocess.run(command, check=True, timeout=300)

    ref = inference.load_workdir(reference)[2]
    got = inference.load_workdir(interrupted)[2]
    for a, b in zip(jax.tree_util.tree_leaves(ref), jax.tree_util.tree_leaves(got), strict=True):
        np.testing.assert_array_equal(a, b)
    steps = [r["step"] for r in read_metrics(interrupted) if r["split"] == "train"]
    assert steps == list(range(5, 101, 5))  # each logged step once, despite the replays


@needs_torch
def test_resuming_with_other_settings_is_an_error(tiny_model_dir, sentiment_files, tmp_path):
    import subprocess

    command = _train_command(
        tiny_model_dir,
        sentiment_files,
        tmp_path,
        **{"train.max_steps": 10, "train.checkpoint_every": 5},
    )
    subprocess.run(command, check=True, timeout=300)
    (tmp_path / "checkpoints").rename(tmp_path / "finished")  # as if it had stopped at step 5
    changed = subprocess.run(
        command + ["--config.optim.lr=1e-3"], capture_output=True, text=True, timeout=300
    )
    assert changed.returncode == 2
    assert "trained with other settings (optim.lr: 0.002 -> 0.001" in changed.stderr


def test_an_unreadable_latest_checkpoint_is_skipped(tmp_path, caplog):
    import logging

    import jax.numpy as jnp
    import optax

    from jaxft.train import checkpoint

    params = {"w": jnp.ones((3,)), "b": jnp.zeros((2,))}
    mask = {"w": True, "b": False}
    tx = optax.adam(0.1)
    state = state_lib.create(params, mask, tx, jax.random.key(0))
    mgr = checkpoint.state_manager(tmp_path)
    for step_count in (10, 20):
        trained = {"w": jnp.full((3,), float(step_count))}
        state = state.replace(step=jnp.int32(step_count), trainable=trained)
        checkpoint.save_state(mgr, state, {"step": step_count, "config": {}})
    mgr.wait_until_finished()
    for file in (tmp_path / "train_state" / "20" / "state").rglob("*"):
        if file.is_file():
            file.write_bytes(b"truncated")  # what a crash mid-write leaves
    fresh = state_lib.create(params, mask, tx, jax.random.key(0))
    with caplog.at_level(logging.WARNING):
        restored, meta = checkpoint.restore_state(checkpoint.state_manager(tmp_path), fresh)
    assert meta["step"] == 10 and int(restored.step) == 10
    np.testing.assert_array_equal(restored.trainable["w"], [10.0, 10.0, 10.0])
    assert "skipping unreadable checkpoint" in caplog.text


def _layout_command(model_dir, files, workdir, *extra):
    settings = {
        "train.max_steps": 5,
        "train.log_every": 1,
        "train.batch_size": 32,
        "train.eval_splits": "",
        "train.eval_every_epoch": "false",
        "train.checkpoint_every": 3,
        "task.head_dropout": 0.0,
        **{f"model_config.{k}": v for k, v in NO_DROPOUT.items()},
    }
    return _train_command(model_dir, files, workdir, **settings) + list(extra)


def _fake_devices(n: int) -> dict:
    import os

    return dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={n}")


def _losses_on_devices(model_dir, files, workdir, devices: int, *extra):
    """Train 5 steps in a fresh process that sees `devices` fake CPU devices; its losses."""
    import subprocess

    command = _layout_command(model_dir, files, workdir, *extra)
    done = subprocess.run(
        command, env=_fake_devices(devices), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    if devices > 1:
        assert f"over {devices} devices" in done.stderr
    return [r["loss"] for r in read_metrics(workdir) if r["split"] == "train"]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _two_processes(command):
    """Start `command` as processes 0 and 1 of a run of 2 x 4 fake devices on localhost."""
    import subprocess

    command = command + ["--coordinator", f"localhost:{_free_port()}", "--num_processes", "2"]
    return [
        subprocess.Popen(
            command + ["--process_id", str(i)],
            env=_fake_devices(4),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]


def _finish(processes) -> list[tuple[str, str]]:
    outputs = [p.communicate(timeout=300) for p in processes]
    for p, (_, err) in zip(processes, outputs, strict=True):
        assert p.returncode == 0, err[-3000:]
    return outputs


def _losses_on_two_processes(model_dir, files, workdir):
    """The 5 steps as 2 processes x 4 fake devices joined over localhost (gloo collectives)."""
    outputs = _finish(_two_processes(_layout_command(model_dir, files, workdir)))
    assert "over 8 devices of 2 processes" in outputs[0][1]
    return [r["loss"] for r in read_metrics(workdir) if r["split"] == "train"]


@needs_torch
def test_every_device_layout_computes_the_single_device_step(
    tiny_model_dir, sentiment_files, tmp_path
):
    from jaxft.train import inference

    def losses(name, devices, *extra):
        return _losses_on_devices(tiny_model_dir, sentiment_files, tmp_path / name, devices, *extra)

    one = losses("one", 1)
    assert len(one) == 5
    layouts = {
        "data8": losses("data8", 8, "--config.mesh.data=8"),
        "fsdp": losses("fsdp", 8, "--config.mesh.data=2", "--config.mesh.fsdp=4"),
        "pmap": losses("pmap", 8, "--config.train.parallel=pmap"),
        "2 processes": _losses_on_two_processes(
            tiny_model_dir, sentiment_files, tmp_path / "hosts"
        ),
    }
    for name, got in layouts.items():
        np.testing.assert_allclose(got, one, atol=1e-5, err_msg=name)

    # Final checkpoints written sharded over 8 devices (or by 2 processes) restore on one.
    on_one = jax.tree_util.tree_leaves(inference.load_workdir(tmp_path / "one")[2])
    for name in ("fsdp", "hosts"):
        restored = jax.tree_util.tree_leaves(inference.load_workdir(tmp_path / name)[2])
        for a, b in zip(on_one, restored, strict=True):
            np.testing.assert_allclose(a, b, atol=1e-5, err_msg=name)

    # The resumable state of step 3, saved on a 2x4 mesh, resumes on a 2x2 mesh of 4 devices.
    (tmp_path / "fsdp" / "checkpoints").rename(tmp_path / "fsdp" / "finished")
    resumed = losses("fsdp", 4, "--config.mesh.data=2", "--config.mesh.fsdp=2")
    assert len(resumed) == 5  # steps 1-3 kept from the first run, 4-5 trained after resuming
    np.testing.assert_allclose(resumed, one, atol=1e-5)


def test_fsdp_shards_big_leaves_and_replicates_small_ones():
    from jax.sharding import PartitionSpec

    from jaxft.train import sharding

    assert sharding.leaf_spec((32000, 768), 4) == PartitionSpec("fsdp", None)
    assert sharding.leaf_spec((30522, 768), 4) == PartitionSpec(None, "fsdp")  # 4 ∤ 30522
    assert sharding.leaf_spec((768, 3072), 8) == PartitionSpec(None, "fsdp")
    assert sharding.leaf_spec((768,), 8) == PartitionSpec()  # small: replicated
    assert sharding.leaf_spec((30522, 7), 4) == PartitionSpec()  # nothing divides by 4
    assert sharding.leaf_spec((4096, 4096), 1) == PartitionSpec()


def test_a_mesh_that_does_not_cover_the_devices_is_an_error():
    from jaxft.train import sharding

    devices = jax.devices() * 6  # stand-in list of 6 devices: only the count matters here
    with pytest.raises(UserError, match="mesh data=4 x fsdp=2 does not cover the 6 devices"):
        sharding.make_mesh(4, 2, devices)
    with pytest.raises(UserError, match="data=3 x fsdp=4"):
        sharding.make_mesh(3, 4, devices)
    with pytest.raises(UserError, match="train.batch_size=30 does not split over the mesh's 8"):
        sharding.check_batch(30, 8)


@needs_torch
def test_a_preemption_notice_to_one_process_saves_all_at_one_step(
    tiny_model_dir, sentiment_files, tmp_path
):
    import signal
    import time

    command = _layout_command(
        tiny_model_dir,
        sentiment_files,
        tmp_path,
        "--config.train.max_steps=0",  # all 5 epochs: 50 steps
        "--config.train.checkpoint_every=0",
    )
    processes = _two_processes(command)
    deadline = time.time() + 240
    while not (tmp_path / "metrics.jsonl").exists() or len(read_metrics(tmp_path)) < 10:
        assert time.time() < deadline and all(p.poll() is None for p in processes)
        time.sleep(0.1)
    processes[1].send_signal(signal.SIGTERM)  # process 0 hears of it through JAX's runtime
    outputs = _finish(processes)
    said = [out.split("preempted at step ")[1].split(":")[0] for out, _ in outputs]
    assert said[0] == said[1]  # both saved the same step
    assert [p.name for p in (tmp_path / "train_state").iterdir()] == [said[0]]
    outputs = _finish(_two_processes(command))
    assert f"resuming from {tmp_path / 'train_state'}/{said[0]}" in outputs[0][1]
    steps = [r["step"] for r in read_metrics(tmp_path) if r["split"] == "train"]
    assert steps == list(range(1, 51))


def test_a_coordinator_that_never_answers_is_a_clear_error(tmp_path):
    import subprocess
    import sys
    import time

    command = [sys.executable, "-m", "jaxft", "train", "experiments/rotten_tomatoes.py"]
    command += ["--workdir", str(tmp_path), "--coordinator", f"localhost:{_free_port()}"]
    command += ["--num_processes", "2", "--process_id", "1", "--init_timeout", "2"]
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "did not answer within 2 s" in done.stderr
    assert "Start process 0 with the same --coordinator" in done.stderr
    assert time.monotonic() - started < 60


def test_multi_host_flags_are_all_or_nothing():
    from jaxft.train import distributed

    with pytest.raises(UserError, match="needs all of --coordinator HOST:PORT, --num_processes"):
        distributed.initialize("localhost:1234", 2, None)
    with pytest.raises(UserError, match="--process_id 2 is not in 0..1"):
        distributed.initialize("localhost:1234", 2, 2)
    with pytest.raises(UserError, match="must look like HOST:PORT"):
        distributed.initialize("localhost", 2, 0)


def test_fsdp_8_holds_an_eighth_of_a_bert_base_train_state_per_device():
    """Counted from the shardings of the abstract state (nothing is allocated)."""
    import subprocess
    import sys

    script = """
import jax, optax
from jaxft import models, peft
from jaxft.train import sharding, state as state_lib
model = models.build_model("bert-base", head="classification", num_labels=2)
def init():
    params = models.init_params(model, jax.random.key(0))
    mask = jax.tree_util.tree_map(lambda _: True, params)
    return state_lib.create(params, mask, optax.adamw(1e-4), jax.random.key(0))
state = jax.eval_shape(init)
for fsdp in (1, 8):
    mesh = sharding.make_mesh(8 // fsdp, fsdp)
    per_device, total = sharding.bytes_per_device(state, sharding.tree_shardings(mesh, state))
    print(fsdp, per_device, total)
# A rule moves the word embeddings' split to their columns, in the params and both moments.
rules = ("word_embeddings/embedding$=none fsdp",)
shardings = sharding.tree_shardings(mesh, state, rules)
leaves = jax.tree_util.tree_leaves_with_path(shardings)
specs = {sharding.leaf_path(kp): s.spec for kp, s in leaves}
moved = [p for p in specs if p.endswith("word_embeddings/embedding")]
assert len(moved) == 3, moved
assert all(specs[p] == jax.sharding.PartitionSpec(None, "fsdp") for p in moved), moved
try:
    sharding.tree_shardings(mesh, state, ("word_embeddings/embedding$=fsdp none",))
except Exception as e:
    print("error:", e)
"""
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=_fake_devices(8),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "error: mesh.rules 'word_embeddings/embedding$=fsdp none': " in done.stdout
    assert "dim of size 30522 does not split over mesh.fsdp=8" in done.stdout
    rows = {
        int(f): (int(p), int(t))
        for f, p, t in (line.split() for line in done.stdout.split("\n") if line[:1].isdigit())
    }
    replicated, total = rows[1]
    sharded, _ = rows[8]
    assert replicated == total  # data parallel only: every device holds everything
    # BERT-base: 110M params x (weights + 2 Adam moments) x 4 bytes.
    assert 1.2e9 < total < 1.4e9
    assert sharded / total < 1 / 8 + 0.005  # only LayerNorms and biases stay whole
    print(f"fsdp=8: {sharded / 2**20:.1f} MiB per device of {total / 2**20:.1f} MiB")


def test_mesh_rules_override_the_default_split_and_must_match():
    import jax.numpy as jnp
    from jax.sharding import PartitionSpec

    from jaxft.train import sharding

    mesh = sharding.make_mesh(1, 1)
    tree = {"emb": {"embedding": jnp.zeros((64, 8))}, "dense": {"kernel": jnp.zeros((8, 8))}}
    shardings = sharding.tree_shardings(mesh, tree, ("emb/embedding$=fsdp none",))
    assert shardings["emb"]["embedding"].spec == PartitionSpec("fsdp", None)
    assert shardings["dense"]["kernel"].spec == PartitionSpec()
    replicated = sharding.tree_shardings(mesh, tree, ("kernel=replicated",))
    assert replicated["dense"]["kernel"].spec == PartitionSpec()
    with pytest.raises(UserError, match=r"'embeding=none' matches no leaf; paths look like"):
        sharding.tree_shardings(mesh, tree, ("embeding=none",))
    with pytest.raises(UserError, match="'fsdpp' is not fsdp, data or none"):
        sharding.tree_shardings(mesh, tree, ("kernel=fsdpp none",))
    with pytest.raises(UserError, match="gives 3 dims to dense/kernel of shape"):
        sharding.tree_shardings(mesh, tree, ("kernel=none none fsdp",))
    with pytest.raises(UserError, match="must look like REGEX=SPEC"):
        sharding.tree_shardings(mesh, tree, ("kernel",))


@needs_torch
def test_a_second_run_loads_its_compiled_steps_from_the_cache(
    tiny_model_dir, sentiment_files, tmp_path
):
    """`compile_cache` keeps the compiled steps; a repeat of the run reads them and reaches the
    same results."""
    import json
    import subprocess

    cache = tmp_path / "xla"
    extra = {"train.max_steps": 10, "compile_cache": cache}
    for run in ("first", "second"):
        command = _train_command(tiny_model_dir, sentiment_files, tmp_path / run, **extra)
        # Every compilation is kept, however short, so that the tiny run's steps are.
        command = [command[0], "-c", _KEEP_ALL_COMPILES, *command[3:]]
        subprocess.run(command, check=True, timeout=300)
        if run == "first":
            kept = {p.name for p in cache.iterdir()}
            assert any(name.startswith("jit_train_step") for name in kept), kept
    assert {p.name for p in cache.iterdir()} == kept  # nothing compiled anew
    first, second = (
        json.loads((tmp_path / r / "eval.json").read_text()) for r in ("first", "second")
    )
    assert first == second


_KEEP_ALL_COMPILES = (
    "import sys, jax; jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0); "
    "from jaxft.cli import main; sys.exit(main(sys.argv[1:]))"
)


def test_xla_options_parse_to_typed_compile_options_and_bad_text_is_one_error():
    from jaxft import config as config_lib

    options = config_lib.xla_options(
        "xla_gpu_autotune_level=0, xla_cpu_enable_fast_math=False,xla_x=1.5,xla_y=name,"
    )
    assert options == {
        "xla_gpu_autotune_level": 0,
        "xla_cpu_enable_fast_math": False,
        "xla_x": 1.5,
        "xla_y": "name",
    }
    assert type(options["xla_gpu_autotune_level"]) is int
    assert config_lib.xla_options("") == {}
    c = config_lib.defaults()
    c.train.xla_options = "xla_gpu_autotune_level"
    with pytest.raises(UserError, match="'xla_gpu_autotune_level' is not name=value"):
        config_lib.validate(c)


def _runner_step_fusions(xla_options: str, parallel_mode: str = "mesh"):
    """Fusions in the ENTRY of the train step a runner compiles for these options."""
    from jaxft import config as config_lib
    from jaxft.train import parallel

    c = config_lib.defaults()
    c.train.xla_options, c.train.parallel = xla_options, parallel_mode
    state = {"w": np.ones((8, 8), np.float32)}

    def make_train_step(axis_name):
        return lambda state, batch: ({"w": jax.numpy.tanh(state["w"] * batch + 1)}, {})

    runner = parallel.make_runner(c, state, make_train_step, lambda p, b: b)
    text = runner.step.lower(state, np.float32(2.0)).compile().as_text()
    return text[text.index("ENTRY") :].count("fusion(")


def test_xla_options_reach_the_train_steps_compile_and_misspelt_ones_fail_up_front():
    # XLA's CPU fusion pass, switched off through the option, leaves one fusion per op.
    assert _runner_step_fusions("xla_disable_hlo_passes=fusion") > _runner_step_fusions("")
    # A GPU option compiles on the CPU too: one experiment file serves both.
    assert _runner_step_fusions("xla_gpu_autotune_level=0") == _runner_step_fusions("")
    with pytest.raises(UserError, match="No such compile option: 'xla_gpu_autotune_levle'"):
        _runner_step_fusions("xla_gpu_autotune_levle=0")
    with pytest.raises(UserError, match="jax.pmap takes no compile options"):
        _runner_step_fusions("xla_gpu_autotune_level=0", "pmap")


def test_gpu_compile_defaults_apply_on_a_gpu_only_under_the_users_options(monkeypatch):
    from jaxft.train import parallel

    off = {"xla_gpu_experimental_enable_fusion_autotuner": False}
    assert parallel.default_compile_options("cpu") == {}
    assert parallel.compile_options("", "cpu") is None
    assert parallel.default_compile_options("gpu") == off
    assert parallel.compile_options("", "gpu") == off
    assert parallel.compile_options("xla_gpu_autotune_level=0", "gpu") == {
        **off,
        "xla_gpu_autotune_level": 0,
    }
    chosen = "xla_gpu_experimental_enable_fusion_autotuner=true"
    assert parallel.compile_options(chosen, "gpu") == {
        "xla_gpu_experimental_enable_fusion_autotuner": True
    }
    # A default this XLA does not know (a later XLA may drop an experimental option) is left
    # out instead of failing every compile.
    monkeypatch.setitem(parallel.GPU_COMPILE_DEFAULTS, "xla_gpu_not_an_option_at_all", True)
    assert parallel.default_compile_options("cuda") == off
