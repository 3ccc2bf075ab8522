"""drakegpt/replicas.py: replicas are their single runs, each stops early on its own, and a stopped group always
resumes, whatever mix of running, stopped-early and finished replicas it holds."""

import shutil

import pytest
import torch

from drakegpt.errors import UsageError
from drakegpt.replicas import plan_replicas
from helpers.runs import train_in_process, typed_config

NO_DROPOUT = ["model=BlocksLM", "train.iters=30", "train.eval_interval=10", "logger=none", "train.precision=fp32",
              "train.sample_length=0", "train.threads=1"]


def history(folder):
    return torch.load(folder / "checkpoints" / "last.pt", weights_only=True)["progress"]["history"]


def test_replicas_match_their_single_runs_in_every_evaluation_without_dropout(tmp_path):
    group = train_in_process(tmp_path / "group", *NO_DROPOUT, "seed=7", "train.replicas=2")
    for seed, replica in zip((7, 8), group):
        single = train_in_process(tmp_path / f"single{seed}", *NO_DROPOUT, f"seed={seed}")[0]
        assert replica["seed"] == seed and replica["params"] == single["params"]
        for key in ("final_train_loss", "final_val_loss", "best_val_loss"):
            assert replica[key] == pytest.approx(single[key], abs=1e-4), key
        assert replica["best_step"] == single["best_step"]
        rows = zip(history(tmp_path / "group" / "run" / f"seed={seed}"), history(tmp_path / f"single{seed}" / "run"))
        for a, b in rows:  # batched and single matmuls round differently: 1e-4
            assert a["step"] == b["step"]
            assert (a["train_loss"], a["val_loss"]) == pytest.approx((b["train_loss"], b["val_loss"]), abs=1e-4)


# A learning rate too small to move fp32 weights for seed 1's replica alone is not possible: the replicas share
# the optimizer's settings. Patience 1 with a noisy tiny BigramLM stops replicas at different evaluations.
EARLY = ["model=BigramLM", "train.iters=60", "train.eval_interval=5", "train.eval=random", "train.eval_iters=1",
         "scale.batch_size=4", "train.patience=1", "logger=none", "train.sample_length=0", "train.threads=1",
         "optimizer.base_lr=0.3", "optimizer.max_lr=0.3"]


def test_each_replica_stops_early_on_its_own(tmp_path):
    group = train_in_process(tmp_path / "group", *EARLY, "seed=1", "train.replicas=3")
    steps = [s["steps"] for s in group]
    assert len(set(steps)) > 1, steps  # not all at the first replica's stop
    for seed, replica in zip((1, 2, 3), group):
        single = train_in_process(tmp_path / f"single{seed}", *EARLY, f"seed={seed}")[0]
        assert (replica["steps"], replica["best_step"]) == (single["steps"], single["best_step"])
        assert replica["stopped_early"] == single["stopped_early"]


def test_a_stopped_group_with_replicas_stopped_early_resumes_to_the_straight_losses(tmp_path):
    """Cut the group after the first replica stopped early and before the others finish, as a kill would."""
    straight = train_in_process(tmp_path / "straight", *EARLY, "seed=1", "train.replicas=3")
    first_stop = min(s["steps"] for s in straight)
    assert first_stop < max(s["steps"] for s in straight)
    cut = tmp_path / "cut"
    train_in_process(cut, *EARLY, "seed=1", "train.replicas=3", f"train.iters={first_stop + 5}")
    for seed in (1, 2, 3):  # as the cut run left them: asked for 60 iterations, no summary written yet
        folder = cut / "run" / f"seed={seed}"
        state = torch.load(folder / "checkpoints" / "last.pt", weights_only=True)
        state["run_config"]["train"]["iters"] = 60
        torch.save(state, folder / "checkpoints" / "last.pt")
        (folder / "summary.json").unlink()
    run_ids = [torch.load(cut / "run" / f"seed={s}" / "checkpoints" / "last.pt", weights_only=True)["run_id"]
               for s in (1, 2, 3)]
    resumed = train_in_process(cut, *EARLY, "seed=1", "train.replicas=3", resume=True)
    for a, b in zip(straight, resumed):
        for key in ("steps", "best_step", "best_val_loss", "final_val_loss", "stopped_early"):
            assert a[key] == b[key], (a["seed"], key)
    assert [r["run_id"] for r in resumed] == run_ids  # each replica continues its own W&B run


def test_a_resume_after_checkpoints_were_deleted_is_refused_not_restarted(tmp_path):
    train_in_process(tmp_path, *NO_DROPOUT)
    shutil.rmtree(tmp_path / "run" / "checkpoints")
    with pytest.raises(UsageError, match="the run saved checkpoints there"):
        train_in_process(tmp_path, *NO_DROPOUT, resume=True)


def test_a_group_with_a_replica_folder_deleted_names_the_missing_replica(tmp_path):
    train_in_process(tmp_path, *NO_DROPOUT, "seed=1", "train.replicas=2")
    shutil.rmtree(tmp_path / "run" / "seed=2")
    cfg, resolved = typed_config(*NO_DROPOUT, "seed=1", "train.replicas=2")
    with pytest.raises(UsageError) as refused:
        plan_replicas(cfg, resolved, tmp_path / "run", resume=True)
    assert "a single run" not in str(refused.value)
    assert "holds replicas seed=1" in str(refused.value) or "seed=2 missing" in str(refused.value)


def fake_group(*states, steps=(100, 100, 100), digest="d"):
    """Replicas as a stopped group leaves them: each with a checkpoint's state, step and data digest."""
    from types import SimpleNamespace

    return [SimpleNamespace(files=SimpleNamespace(root=SimpleNamespace(name=f"seed={i}"), last=f"seed={i}/last.pt",
                                                  read_summary=dict),
                            checkpoint=SimpleNamespace(data_digest=digest, progress={"state": state, "step": step}))
            for i, (state, step) in enumerate(zip(states, steps))]


def test_the_group_is_led_by_a_running_replica_whatever_stopped_before_it():
    from drakegpt.replicas import check_resumable

    group = fake_group("stopped_early", "training", "finished", steps=(40, 100, 100))
    assert check_resumable(group, "d") is group[1]
    group = fake_group("stopped_early", "finished", steps=(40, 100))
    assert check_resumable(group, "d") is group[0]  # nothing runs: any one leads
    with pytest.raises(UsageError, match="the running replicas' checkpoints are at different steps"):
        check_resumable(fake_group("training", "training", steps=(100, 90)), "d")
    with pytest.raises(UsageError, match="the training text changed since seed=0/last.pt was written"):
        check_resumable(fake_group("training", digest="e"), "d")


def test_finished_summaries_only_when_every_replica_finished_ok(tmp_path):
    import json

    from drakegpt.replicas import finished_summaries

    cfg, resolved = typed_config(*NO_DROPOUT, "seed=1", "train.replicas=2")
    for seed, status in ((1, "ok"), (2, "interrupted")):
        (tmp_path / f"seed={seed}").mkdir()
        (tmp_path / f"seed={seed}" / "summary.json").write_text(json.dumps({"status": status}))
    replicas = plan_replicas(cfg, resolved, tmp_path, resume=True)
    assert finished_summaries(replicas) is None
    (tmp_path / "seed=2" / "summary.json").write_text(json.dumps({"status": "ok"}))
    assert [s["status"] for s in finished_summaries(replicas)] == ["ok", "ok"]


def test_a_group_with_a_diverged_replica_resumes_and_says_it_diverged(tmp_path):
    diverging = ["train.iters=60", "train.eval_interval=5", "train.eval=random", "train.eval_iters=2",
                 "optimizer=sgd_cyclic", "optimizer.base_lr=0.7", "optimizer.max_lr=0.7", "logger=none",
                 "train.sample_length=0", "train.threads=1", "seed=1", "train.replicas=2"]
    with pytest.raises(UsageError, match="training diverged") as first:
        train_in_process(tmp_path, *diverging)
    with pytest.raises(UsageError) as again:
        train_in_process(tmp_path, *diverging, resume=True)
    assert "training diverged" in str(again.value) and "different steps" not in str(again.value)
    assert str(again.value) == str(first.value)


def test_a_linked_replica_folder_is_refused(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "outside").mkdir()
    (tmp_path / "run" / "seed=2").symlink_to(tmp_path / "outside")
    cfg, resolved = typed_config(*NO_DROPOUT, "seed=1", "train.replicas=2")
    with pytest.raises(UsageError, match="seed=2 is a symbolic link"):
        plan_replicas(cfg, resolved, tmp_path / "run", resume=False)


@pytest.mark.parametrize("damage", ["eval_windows", "progress", "batches_rng", "schedule_state"])
def test_a_checkpoint_damaged_inside_is_one_line_on_resume(tmp_path, damage):
    train_in_process(tmp_path, *NO_DROPOUT, "train.iters=20")
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    state = torch.load(last, weights_only=True)
    state["run_config"]["train"]["iters"] = 30
    if damage == "eval_windows":
        del state["eval_windows"]["val"]
    elif damage == "progress":
        state["progress"]["step"] = "abc"
    elif damage == "batches_rng":
        state["batches_rng"] = state["batches_rng"][:10]
    else:
        state["schedule_state"] = {}
    torch.save(state, last)
    with pytest.raises(UsageError, match="is a damaged checkpoint"):
        train_in_process(tmp_path, *NO_DROPOUT, "train.iters=30", resume=True)
