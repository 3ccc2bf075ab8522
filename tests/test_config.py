"""conf/ composed with Hydra's compose API: typed, validated, presets that set their own learning rates."""

import copy

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from conftest import ROOT
from drakegpt.config import Attention, RunConfig, Schedule, Task, register_configs, validate
from drakegpt.errors import UsageError
from drakegpt.models import MODELS

register_configs()

# ${hydra:runtime.cwd} only resolves inside a Hydra run, not under compose.
PATHS = ["paths.models_dir=/tmp/drakegpt-test/models", "paths.inference_dir=/tmp/drakegpt-test/inference"]
SCALES = {
    "default": dict(
        context_length=8,
        batch_size=32,
        embedding_dim=32,
        num_heads=4,
        num_layers=3,
        dropout=0.1,
        base_lr=1e-3,
        max_lr=5e-3,
    ),
    "large": dict(
        context_length=256,
        batch_size=64,
        embedding_dim=384,
        num_heads=6,
        num_layers=6,
        dropout=0.2,
        base_lr=3e-4,
        max_lr=6e-4,
    ),
}


def compose_cfg(*overrides: str, hydra_config: bool = False):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides) + PATHS, return_hydra_config=hydra_config)


def typed(*overrides: str) -> RunConfig:
    cfg = OmegaConf.to_object(compose_cfg(*overrides))
    assert isinstance(cfg, RunConfig)
    return cfg


@pytest.fixture(scope="module")
def base() -> RunConfig:
    cfg = typed()
    validate(cfg)
    return cfg


def test_defaults(base):
    assert base.task is Task.train
    assert base.model.name == "TransformerLM" and base.model.attention is Attention.fast
    assert base.scale.name == "default"
    assert base.optimizer.schedule is Schedule.cyclic
    assert base.data.source.value == "sample"
    assert base.paths.models_dir == "/tmp/drakegpt-test/models"
    assert (base.train.iters, base.train.eval_interval, base.train.eval_iters) == (10000, 500, 200)


@pytest.mark.parametrize("scale", ["default", "large"])
@pytest.mark.parametrize("model", list(MODELS))
def test_every_model_and_scale_composes(model, scale):
    cfg = typed(f"model={model}", f"scale={scale}")
    validate(cfg)
    assert cfg.model.name == model and cfg.scale.name == scale
    expected = SCALES[scale]
    for key in ("context_length", "batch_size", "embedding_dim", "num_heads", "num_layers", "dropout"):
        assert getattr(cfg.scale, key) == expected[key], key
    # the optimizer takes the chosen preset's learning rates, not the default preset's
    assert cfg.optimizer.base_lr == expected["base_lr"]
    assert cfg.optimizer.max_lr == expected["max_lr"]
    assert list(cfg.optimizer.betas) == [0.9, 0.95]


@pytest.mark.parametrize("optimizer", ["adamw_cyclic", "adamw_cosine"])
def test_large_learning_rates_with_either_optimizer(optimizer):
    cfg = typed(f"optimizer={optimizer}", "scale=large")
    assert (cfg.optimizer.base_lr, cfg.optimizer.max_lr) == (3e-4, 6e-4)
    assert cfg.optimizer.schedule is Schedule(optimizer.split("_")[1])


def test_learning_rate_overrides():
    cfg = typed("scale=large", "optimizer.base_lr=2e-4", "optimizer.max_lr=9e-4")
    validate(cfg)
    assert (cfg.optimizer.base_lr, cfg.optimizer.max_lr) == (2e-4, 9e-4)
    assert (cfg.scale.base_lr, cfg.scale.max_lr) == (3e-4, 6e-4)
    # overriding the preset's rate moves the optimizer's with it
    cfg = typed("scale.base_lr=1e-4")
    assert cfg.optimizer.base_lr == 1e-4 and cfg.optimizer.max_lr == 5e-3


def test_scale_override_changes_one_value():
    cfg = typed("scale.num_heads=8")
    validate(cfg)
    assert cfg.scale.num_heads == 8
    rest = {k: v for k, v in SCALES["default"].items() if k not in ("num_heads", "base_lr", "max_lr")}
    assert {k: getattr(cfg.scale, k) for k in rest} == rest
    assert cfg.model.name == "TransformerLM"


def test_attention_choice():
    for impl in Attention:
        assert typed(f"model.attention={impl.value}").model.attention is impl


@pytest.mark.parametrize(
    "override, key",
    [
        ("scale.num_heads=four", "scale.num_heads"),
        ("train.iters=1.5", "train.iters"),
        ("model.attention=fastest", "model.attention"),
        ("scale.foo=1", "scale.foo"),
        ("optimizer=adam", "optimizer"),
        ("train.compile=maybe", "train.compile"),
    ],
)
def test_wrong_types_fail_at_compose_time(override, key):
    with pytest.raises(ConfigCompositionException) as excinfo:
        compose_cfg(override)
    assert key in str(excinfo.value)


# ---------------------------------------------------------------------------------------------------------------
# validate: the values types cannot check


def _set(cfg: RunConfig, dotted: str, value) -> RunConfig:
    cfg = copy.deepcopy(cfg)
    *parents, leaf = dotted.split(".")
    node = cfg
    for part in parents:
        node = getattr(node, part)
    setattr(node, leaf, value)
    return cfg


def _rejects(cfg: RunConfig, *fragments: str) -> str:
    with pytest.raises(UsageError) as excinfo:
        validate(cfg)
    message = str(excinfo.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return message


def test_embedding_dim_not_divisible_by_num_heads(base):
    _rejects(_set(base, "scale.num_heads", 5), "scale.embedding_dim=32", "scale.num_heads=5")
    _rejects(_set(base, "scale.embedding_dim", 30), "scale.embedding_dim=30", "scale.num_heads=4")


@pytest.mark.parametrize(
    "key",
    [
        "scale.context_length",
        "scale.batch_size",
        "scale.embedding_dim",
        "scale.num_heads",
        "scale.num_layers",
        "train.iters",
        "train.eval_interval",
        "train.eval_iters",
        "optimizer.base_lr",
        "optimizer.max_lr",
        "optimizer.step_size_up",
    ],
)
@pytest.mark.parametrize("value", [0, -1])
def test_non_positive_values(base, key, value):
    _rejects(_set(base, key, value), f"{key}={value}", "positive")


def test_eval_interval_larger_than_iters(base):
    cfg = _set(_set(base, "train.iters", 100), "train.eval_interval", 101)
    _rejects(cfg, "train.eval_interval=101", "train.iters=100")
    validate(_set(cfg, "train.eval_interval", 100))


def test_cosine_warmup_must_end_before_the_run(base):
    cfg = _set(_set(_set(base, "optimizer.schedule", Schedule.cosine), "train.iters", 500), "train.eval_interval", 100)
    _rejects(_set(cfg, "optimizer.warmup_iters", 500), "optimizer.warmup_iters=500", "train.iters=500")
    validate(_set(cfg, "optimizer.warmup_iters", 499))
    validate(_set(_set(cfg, "optimizer.schedule", Schedule.cyclic), "optimizer.warmup_iters", 500))  # cyclic ignores it


def test_wandb_mode_takes_every_value_wandb_accepts(monkeypatch):
    for mode in ("online", "offline", "disabled", "shared", "dryrun", "run"):
        monkeypatch.setenv("WANDB_MODE", mode)
        assert typed("logger=wandb").logger.mode.value == mode


@pytest.mark.parametrize("dropout", [-0.1, 1.0, 1.5])
def test_dropout_outside_unit_interval(base, dropout):
    _rejects(_set(base, "scale.dropout", dropout), f"scale.dropout={dropout}")


def test_dropout_zero_is_fine(base):
    validate(_set(base, "scale.dropout", 0.0))


def test_max_lr_below_base_lr(base):
    cfg = _set(_set(base, "optimizer.base_lr", 1e-3), "optimizer.max_lr", 5e-4)
    _rejects(cfg, "optimizer.max_lr=0.0005", "optimizer.base_lr=0.001")
    validate(_set(cfg, "optimizer.max_lr", 1e-3))  # equal rates are a constant schedule


@pytest.mark.parametrize("top_p", [0.0, -0.5, 1.5])
def test_bad_top_p(base, top_p):
    _rejects(_set(base, "generate.top_p", top_p), f"generate.top_p={top_p}")


@pytest.mark.parametrize("top_p", [0.9, 1.0, None])
def test_good_top_p(base, top_p):
    validate(_set(base, "generate.top_p", top_p))


def test_other_generate_values(base):
    _rejects(_set(base, "generate.top_k", 0), "generate.top_k=0")
    _rejects(_set(base, "generate.temperature", -1.0), "generate.temperature=-1.0")


def test_unknown_model_name(base):
    _rejects(_set(base, "model.name", "GPT5"), "model=GPT5", "TransformerLM")


# ---------------------------------------------------------------------------------------------------------------
# experiment and hparams_search


def test_experiment_overfitting():
    cfg = compose_cfg("experiment=overfitting", hydra_config=True)
    assert cfg.model.name == "TransformerLM" and cfg.scale.name == "large"
    assert dict(cfg.hydra.sweeper.params) == {"remedy": "none,early_stopping,lr_decay,more_dropout,all"}
    typed_cfg = typed("experiment=overfitting")
    validate(typed_cfg)
    assert (typed_cfg.optimizer.base_lr, typed_cfg.optimizer.max_lr) == (3e-4, 6e-4)
    # each remedy composes and sets what it names; `all` sets the three
    remedies = {
        name: typed("experiment=overfitting", f"remedy={name}")
        for name in ("none", "early_stopping", "lr_decay", "more_dropout", "all")
    }
    for remedy in remedies.values():
        validate(remedy)
    setting = lambda c: (c.train.patience, c.optimizer.schedule, c.scale.dropout)  # noqa: E731
    assert setting(remedies["none"]) == (0, Schedule.cyclic, 0.2)
    assert setting(remedies["early_stopping"]) == (4, Schedule.cyclic, 0.2)
    assert setting(remedies["lr_decay"]) == (0, Schedule.cosine, 0.2)
    assert setting(remedies["more_dropout"]) == (0, Schedule.cyclic, 0.35)
    assert setting(remedies["all"]) == (4, Schedule.cosine, 0.35)


def test_hparams_search_transformer_optuna():
    cfg = compose_cfg("hparams_search=transformer_optuna", hydra_config=True)
    assert cfg.model.name == "TransformerLM"
    assert cfg.optimized_metric == "best_val_loss"
    sweeper = cfg.hydra.sweeper
    assert "OptunaSweeper" in sweeper._target_
    assert sweeper.direction == "minimize"
    assert sweeper.study_name == "transformer_lr_dropout"
    assert sweeper.n_trials == 20 and sweeper.n_jobs == 1
    assert "TPESampler" in sweeper.sampler._target_ and sweeper.sampler.seed == 1234
    assert dict(sweeper.params) == {
        "optimizer.base_lr": "interval(1e-4, 1e-3)",
        "optimizer.max_lr": "interval(1e-3, 1e-2)",
        "scale.dropout": "choice(0.0, 0.1, 0.2, 0.3)",
    }
    typed_cfg = typed("hparams_search=transformer_optuna")
    validate(typed_cfg)
    assert typed_cfg.optimized_metric == "best_val_loss"
