"""The small pieces the training loop stands on, in-process: device, precision and compile policy, signals,
the optimizer and its schedules, crash-safe files, the run-folder lock, and what identifies a run."""

import os
import signal
import subprocess
import sys
from unittest import mock

import pytest
import torch

from conftest import ROOT, typed_config
from drakegpt import optim, runtime
from drakegpt.config import Precision
from drakegpt.errors import UsageError
from drakegpt.files import atomic_write_all, read_json, regular_file, writable_folder
from drakegpt.identity import digest, fingerprint, switch_diff, variant
from drakegpt.run_dir import RunDir
from drakegpt.signals import StopSignals

CPU = torch.device("cpu")


# ------------------------------------------------------------------------------------------------- runtime


def test_precision_auto_takes_bf16_on_a_cpu_only_where_it_pays():
    assert runtime.resolve_precision(Precision.fp32, CPU, 384) is Precision.fp32
    assert runtime.resolve_precision(Precision.bf16, CPU, 32) is Precision.bf16
    with mock.patch.object(runtime, "cpu_has_native_bf16", return_value=True):
        assert runtime.resolve_precision(Precision.auto, CPU, 384) is Precision.bf16
        assert runtime.resolve_precision(Precision.auto, CPU, 32) is Precision.fp32  # the casts would cost more
    with mock.patch.object(runtime, "cpu_has_native_bf16", return_value=False):
        assert runtime.resolve_precision(Precision.auto, CPU, 384) is Precision.fp32  # emulated bf16: ~170x slower


def test_compile_auto_compiles_on_cuda_only():
    assert runtime.resolve_compile("auto", torch.device("cuda")) is True
    assert runtime.resolve_compile("auto", CPU) is False
    assert runtime.resolve_compile(True, CPU) is True and runtime.resolve_compile(False, torch.device("cuda")) is False


def test_device_names():
    assert runtime.resolve_device("cpu") == CPU
    with pytest.raises(UsageError, match="not a device name"):
        runtime.resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="not available"):
            runtime.resolve_device("cuda")


# ------------------------------------------------------------------------------------------------- signals


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGUSR2])
def test_stop_signals_become_a_flag_and_the_old_handlers_come_back(signum):
    before = signal.getsignal(signum)
    with StopSignals() as signals:
        os.kill(os.getpid(), signum)
        assert signals.signum == signum  # no exception: the loop reads the flag at its next iteration
        stop = signals.interrupted()
        assert stop.signum == signum and stop.requeue is None
    assert signal.getsignal(signum) == before


def test_submitits_usr2_handler_is_kept_to_requeue_the_job_after_the_checkpoint():
    calls = []

    def checkpoint_and_try_requeue(signum, frame):  # what submitit installs in a SLURM job
        calls.append(signum)

    checkpoint_and_try_requeue.__module__ = "submitit.core.job_environment"
    previous = signal.signal(signal.SIGUSR2, checkpoint_and_try_requeue)
    try:
        with StopSignals() as signals:
            os.kill(os.getpid(), signal.SIGTERM)  # a preemption: SIGTERM, then SIGUSR2
            os.kill(os.getpid(), signal.SIGUSR2)
            stop = signals.interrupted()
        assert calls == []  # not called while training: the trainer saves first
        assert stop.signum == signal.SIGUSR2 and stop.requeue is checkpoint_and_try_requeue
    finally:
        signal.signal(signal.SIGUSR2, previous)


# -------------------------------------------------------------------------------------- optimizer, schedules


@pytest.mark.parametrize("name, algorithm, first_lr", [("adamw_cyclic", torch.optim.AdamW, 1e-3),
                                                       ("adamw_cosine", torch.optim.AdamW, 5e-3 / 500),
                                                       ("sgd_cyclic", torch.optim.SGD, 0.05)])
def test_each_optimizer_config_builds_its_optimizer_and_schedule(name, algorithm, first_lr):
    cfg, _ = typed_config(f"optimizer={name}")
    parameter = torch.nn.Parameter(torch.zeros(3))
    optimizer = optim.build_optimizer([parameter], cfg.optimizer)
    schedule = optim.build_schedule(optimizer, cfg.optimizer)
    assert type(optimizer) is algorithm
    assert schedule.get_last_lr()[0] == pytest.approx(first_lr)
    if name.endswith("cyclic"):  # the seed's triangle: up for 2,500 iterations to max_lr, then down
        for _ in range(2500):
            optimizer.step()
            schedule.step()
        assert schedule.get_last_lr()[0] == pytest.approx(cfg.optimizer.max_lr)


def test_a_warm_up_longer_than_half_the_run_is_shortened_and_the_cosine_ends_at_base_lr():
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = optim.warmup_cosine(optimizer, warmup_iters=500, total_iters=40, base_lr=0.1, max_lr=1.0)
    lrs = []
    for _ in range(40):
        lrs.append(schedule.get_last_lr()[0])
        optimizer.step()
        schedule.step()
    lrs.append(schedule.get_last_lr()[0])
    assert lrs[19] == pytest.approx(1.0) and max(lrs) == pytest.approx(1.0)  # warmed up in 20, half the run
    assert lrs[-1] == pytest.approx(0.1) and lrs[20:] == sorted(lrs[20:], reverse=True)


def test_a_bad_optimizer_value_is_one_line_naming_the_key():
    cfg, _ = typed_config("optimizer.algorithm.betas=[0.9,1.5]")
    with pytest.raises(UsageError) as refused:
        optim.check(cfg.optimizer)
    assert str(refused.value).startswith("optimizer.algorithm (torch.optim.AdamW): Invalid beta parameter")
    cfg, _ = typed_config("optimizer=sgd_cyclic", "optimizer.algorithm.momentum=-1")
    with pytest.raises(UsageError, match="optimizer.algorithm"):
        optim.check(cfg.optimizer)


# -------------------------------------------------------------------------------------------- files, folders


def test_a_group_of_files_is_replaced_together_or_not_at_all(tmp_path):
    a, b = tmp_path / "a", tmp_path / "sub" / "b"
    atomic_write_all([(a, lambda f: f.write(b"1")), (b, lambda f: f.write(b"1"))])

    def fail(f):
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write_all([(a, lambda f: f.write(b"2")), (b, fail)])
    assert a.read_bytes() == b.read_bytes() == b"1"  # the first file was not replaced alone
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a", "b", "sub"]  # no temporary left behind


def test_regular_files_and_writable_folders(tmp_path):
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "file").write_text("x")
    assert regular_file(tmp_path / "file", "k") == tmp_path / "file"
    for path, message in ((tmp_path / "pipe", "not a regular file"), (tmp_path, "a folder"),
                          (tmp_path / "none", "no such file")):
        with pytest.raises(UsageError, match=message):
            regular_file(path, "k")
    assert writable_folder(tmp_path / "new" / "deep", "k").is_dir()
    with pytest.raises(UsageError, match="k=.* is not writable"):
        writable_folder(tmp_path / "file" / "below", "k")


def test_a_damaged_json_file_is_one_line_that_names_it(tmp_path):
    assert read_json(tmp_path / "none.json") == {}
    for name, content in (("cut.json", b'{"step": 1'), ("binary.json", b"\xff\xfe\x00"), ("list.json", b"[1]")):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(UsageError) as damaged:
            read_json(tmp_path / name)
        message = str(damaged.value)
        assert str(tmp_path / name) in message and "restore it or delete it" in message and "\n" not in message


def test_the_run_folder_lock_is_exclusive_and_dies_with_its_process(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from drakegpt.run_dir import RunDir; RunDir(sys.argv[1]).lock(); "
        "print('locked', flush=True); time.sleep(60)"), str(tmp_path)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(UsageError, match=f"in use by a run that is still going \\(pid {holder.pid}\\)"):
            RunDir(tmp_path).lock()
    finally:
        holder.kill()
        holder.wait()
    folder = RunDir(tmp_path).lock()  # a crashed holder leaves a stale lock file that no longer locks
    assert folder.locked
    folder.unlock()


# ------------------------------------------------------------------------------------------ a run's identity


def test_the_fingerprint_ignores_what_never_changes_the_numbers():
    _, base = typed_config()
    _, other_device = typed_config("device=cpu", "train.threads=1", "logger=none", "generate.length=9")
    _, other_seed = typed_config("seed=2")
    assert fingerprint(base) == fingerprint(other_device) and digest(base) == digest(other_device)
    assert digest(base) != digest(other_seed)


def test_the_variant_says_which_switches_and_overrides_differ_from_the_preset():
    _, resolved = typed_config("model=TransformerLM", "model.norm=none", "variant=gelu")
    assert switch_diff(resolved["model"]) == ["activation=gelu", "norm=none"]
    overrides = ["model=TransformerLM", "model.norm=none", "variant=gelu", "seed=3", "scale.dropout=0.3",
                 "train.threads=1", "remedy=lr_decay"]
    assert variant(resolved, overrides) == "activation=gelu,norm=none,scale.dropout=0.3,remedy=lr_decay"
    _, preset = typed_config("model=BlocksLM", "model.feed_forward=linear")  # the preset's own value
    assert variant(preset, ["model=BlocksLM", "model.feed_forward=linear"]) == ""
