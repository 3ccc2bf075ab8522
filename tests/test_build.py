"""drakegpt/build.py: a run is built from its config alone, the same way for the trainer and the benchmark."""

import torch

from drakegpt.build import build_replicas, build_training, train_step
from drakegpt.models.language_model import LanguageModel
from drakegpt.schema import Precision, model_config
from helpers.runs import typed_config

CPU = torch.device("cpu")


def test_each_replica_is_initialised_as_its_single_run():
    cfg, _ = typed_config()
    config = model_config(cfg.model, cfg.scale, 29)
    group = build_replicas(config, [3, 4], CPU)
    for r, seed in enumerate((3, 4)):
        torch.manual_seed(seed)
        single = LanguageModel(config).replica_state(0)
        assert all(torch.equal(group.replica_state(r)[k], v) for k, v in single.items())


def test_a_run_is_built_with_the_configs_optimizer_schedule_and_precision():
    cfg, _ = typed_config("optimizer=muon", "train.precision=fp32", "train.replicas=2")
    training = build_training(cfg, 29, [1, 2], CPU)
    assert type(training.optimizer).__name__ == "MuonWithAdamW" and training.precision is Precision.fp32
    assert training.step_model is training.model and not training.compiled  # auto: no compile on a CPU
    ids = torch.randint(29, (2, 4, 9))
    first = train_step(training, ids[..., :-1], ids[..., 1:])
    for _ in range(5):
        last = train_step(training, ids[..., :-1], ids[..., 1:])
    assert first.shape == (2,) and torch.all(last < first)  # each replica learns its batch
