"""drakegpt/optim.py: every optimizer config builds, schedules run their course, Muon splits the parameters, and
an optimizer or schedule that cannot step as training steps it is refused in one line."""

import pytest
import torch

from drakegpt import optim
from drakegpt.errors import UsageError
from helpers.runs import typed_config


@pytest.mark.parametrize("name, algorithm, first_lr", [("adamw_cyclic", torch.optim.AdamW, 1e-3),
                                                       ("adamw_cosine", torch.optim.AdamW, 5e-3 / 500),
                                                       ("sgd_cyclic", torch.optim.SGD, 0.05)])
def test_each_optimizer_config_builds_its_optimizer_and_schedule(name, algorithm, first_lr):
    cfg, _ = typed_config(f"optimizer={name}")
    parameter = torch.nn.Parameter(torch.zeros(3))
    optimizer = optim.build_optimizer([{"params": [parameter]}], cfg.optimizer)
    schedule = optim.build_schedule(optimizer, cfg.optimizer)
    assert type(optimizer) is algorithm
    assert schedule.get_last_lr()[0] == pytest.approx(first_lr)
    if name.endswith("cyclic"):  # the original's triangle: up for 2,500 iterations to max_lr, then down
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


@pytest.mark.parametrize("override, message", [
    ("optimizer.schedule.step_size_up=0", "optimizer.schedule.step_size_up=0 must be positive"),
    ("optimizer.schedule.step_size_up=-5", "optimizer.schedule.step_size_up=-5 must be positive"),
    ("+optimizer.schedule.step_size_down=-1", "optimizer.schedule.step_size_down=-1 must be positive"),
    ("optimizer.algorithm._target_=torch.optim.LBFGS", "optimizer.algorithm (torch.optim.LBFGS): "),
    ("optimizer.schedule._target_=torch.optim.lr_scheduler.ReduceLROnPlateau",
     "cannot be stepped once per iteration without arguments"),
])
def test_optimizers_and_schedules_that_cannot_step_as_training_steps_are_refused(override, message):
    overrides = [override]
    if "ReduceLROnPlateau" in override:  # its own arguments, so that only the missing metric is wrong
        overrides = [override, "~optimizer.schedule.base_lr", "~optimizer.schedule.max_lr",
                     "~optimizer.schedule.step_size_up", "~optimizer.schedule.mode",
                     "~optimizer.schedule.cycle_momentum"]
    if "LBFGS" in override:
        overrides += ["~optimizer.algorithm.betas", "~optimizer.algorithm.weight_decay", "~optimizer.algorithm.fused"]
    cfg, _ = typed_config(*overrides)
    with pytest.raises(UsageError) as refused:
        optim.check(cfg.optimizer)
    assert message in str(refused.value) and "\n" not in str(refused.value)


def test_muon_takes_the_matrices_and_adamw_the_rest():
    from drakegpt.models.language_model import LanguageModel
    from drakegpt.schema import model_config

    cfg, _ = typed_config("optimizer=muon", "optimizer.algorithm.muon_lr_factor=3")
    model = LanguageModel(model_config(cfg.model, cfg.scale, 20), replicas=2)
    optimizer = optim.build_optimizer(optim.parameter_groups(model), cfg.optimizer)
    schedule = optim.build_schedule(optimizer, cfg.optimizer)
    matrices = {id(p) for p in optimizer.muon.param_groups[0]["params"]}
    names = {n for n, p in model.named_parameters() if id(p) in matrices}
    assert names and all(n.startswith("blocks.") and n.endswith(".weight") and "norm" not in n for n in names)
    assert not {id(p) for p in optimizer.adamw.param_groups[0]["params"]} & matrices
    muon_lr, adamw_lr = optimizer.muon.param_groups[0]["lr"], optimizer.adamw.param_groups[0]["lr"]
    factor = cfg.optimizer.algorithm["muon_lr_factor"]
    assert muon_lr == pytest.approx(factor * adamw_lr) and schedule.get_last_lr() == [adamw_lr, muon_lr]
    ids = torch.randint(20, (2, 3, 9))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model(ids[..., :-1], ids[..., 1:])[1].sum().backward()
    optimizer.step()
    for n, p in model.named_parameters():
        assert not torch.equal(p, before[n]), n  # every parameter moved
    # Each replica's matrix is orthogonalised on its own: Muon's update of replica 0 is unchanged by replica 1.
    state = optimizer.state_dict()
    optimizer.load_state_dict(state)
    assert optimizer.state_dict()["param_groups"] == state["param_groups"]


def test_muon_is_refused_where_there_are_no_matrices():
    cfg, _ = typed_config("optimizer=muon")
    with pytest.raises(UsageError, match="no attention or feed-forward matrices"):
        optim.build_optimizer([{"params": [torch.nn.Parameter(torch.zeros(1, 4, 4))]}], cfg.optimizer)


def test_muon_steps_each_replica_as_its_single_run():
    from drakegpt.build import build_replicas
    from drakegpt.schema import model_config

    cfg, _ = typed_config("optimizer=muon", "model.dropout=false")
    config = model_config(cfg.model, cfg.scale, 20)
    group = build_replicas(config, [1, 2], torch.device("cpu"))
    singles = [build_replicas(config, [seed], torch.device("cpu")) for seed in (1, 2)]
    ids = torch.randint(20, (2, 3, 9), generator=torch.Generator().manual_seed(0))
    models = [(group, ids)] + [(single, ids[r:r + 1]) for r, single in enumerate(singles)]
    for model, x in models:
        optimizer = optim.build_optimizer(optim.parameter_groups(model), cfg.optimizer)
        model(x[..., :-1], x[..., 1:])[1].sum().backward()
        optimizer.step()
    for r, single in enumerate(singles):
        for (name, p), q in zip(group.named_parameters(), single.parameters()):
            torch.testing.assert_close(p[r], q[0], rtol=1e-4, atol=1e-5, msg=name)
