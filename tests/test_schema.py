"""drakegpt/schema.py: conf/ composed with Hydra's compose API, every option of every group, types at compose time,
the switches declared once, and validation."""

import copy
import re
import shlex
import subprocess
import sys

import pytest
from hydra.errors import ConfigCompositionException

from helpers.runs import ROOT, compose_config, typed_config
from drakegpt.errors import UsageError
from drakegpt.models.config import Depth, FeedForward, Heads, Norm, Switches
from drakegpt.schema import RunConfig, Task, group_options, ladder, model_config, validate

SCALES = {
    "default": dict(context_length=8, batch_size=32, embedding_dim=32, num_heads=4, num_layers=3, dropout=0.1,
                    base_lr=1e-3, max_lr=5e-3),
    "large": dict(context_length=256, batch_size=64, embedding_dim=384, num_heads=6, num_layers=6, dropout=0.2,
                  base_lr=3e-4, max_lr=6e-4),
}
ORIGINAL_MODELS = ["BigramLM", "SingleHeadAttentionLM", "MultiHeadAttentionLM", "BlocksLM", "ResidualBlocksLM",
                   "TransformerLM"]
GROUPS = sorted(p.name for p in (ROOT / "conf").iterdir() if p.is_dir() and p.name != "hydra")


@pytest.fixture(scope="module")
def base() -> RunConfig:
    cfg, resolved = typed_config()
    validate(cfg, resolved)
    return cfg


@pytest.mark.parametrize("choice", [f"{g}={o}" for g in GROUPS for o in group_options(g)])
def test_every_option_of_every_group_composes_and_validates(choice):
    cfg, resolved = typed_config(choice)
    validate(cfg, resolved)


def test_the_groups_are_the_ones_the_readme_lists():
    assert GROUPS == ["data", "debug", "experiment", "hparams_search", "logger", "model", "optimizer", "remedy",
                      "scale", "variant"]
    assert ladder() == [*ORIGINAL_MODELS, "BitNetLM"]  # the original's order, found from the ideas each preset has


def test_defaults(base):
    assert base.task is Task.train
    assert base.model.name == "TransformerLM" and base.scale.name == "default"
    assert base.optimizer.name == "adamw_cyclic" and base.data.source.value == "sample"
    assert (base.train.iters, base.train.eval_interval, base.train.eval_iters) == (10000, 500, 200)
    assert base.train.eval.value == "exact" and base.data.test_fraction == 0.0 and base.train.publish
    assert base.train.replicas == 1 and base.train.compile == "auto"


@pytest.mark.parametrize("scale", ["default", "large"])
@pytest.mark.parametrize("model", ladder())
def test_every_model_and_scale(model, scale):
    cfg, _ = typed_config(f"model={model}", f"scale={scale}")
    assert cfg.model.name == model and cfg.scale.name == scale
    for key in ("context_length", "batch_size", "embedding_dim", "num_heads", "num_layers", "dropout"):
        assert getattr(cfg.scale, key) == SCALES[scale][key], key
    # the optimizer takes the chosen preset's learning rates, not the default preset's (a seed bug)
    assert (cfg.optimizer.base_lr, cfg.optimizer.max_lr) == (SCALES[scale]["base_lr"], SCALES[scale]["max_lr"])
    assert cfg.optimizer.algorithm["lr"] == SCALES[scale]["base_lr"]
    assert cfg.optimizer.schedule["max_lr"] == SCALES[scale]["max_lr"]


def test_presets_are_lists_of_ideas_each_adding_to_the_one_before():
    ideas = {}
    off = {k: getattr(Switches(), k) for k in vars(Switches())}
    for name in ORIGINAL_MODELS:
        _, resolved = typed_config(f"model={name}")
        ideas[name] = {k for k, v in resolved["model"].items()
                       if k != "name" and v != getattr(off[k], "value", off[k])}
    assert ideas["BigramLM"] == set()
    assert ideas["SingleHeadAttentionLM"] == {"attention"}
    steps = list(ideas.values())
    assert all(a < b for a, b in zip(steps, steps[1:]))  # strictly more ideas at each step
    assert ideas["TransformerLM"] - ideas["ResidualBlocksLM"] == {"norm", "final_norm", "dropout"}


def test_switches_map_to_the_model_config():
    cfg, _ = typed_config("model=TransformerLM", "scale=large")
    c = model_config(cfg.model, cfg.scale, vocab_size=80)
    assert (c.num_heads, c.num_layers, c.dropout_rate, c.embedding_dim, c.context_length) == (6, 6, 0.2, 384, 256)
    assert (c.kv_heads, c.feed_forward_width) == (6, 4 * 384)
    cfg, _ = typed_config("model=TransformerLM", "model.heads=one", "model.depth=one", "model.dropout=false")
    c = model_config(cfg.model, cfg.scale, vocab_size=80)
    assert (c.num_heads, c.num_layers, c.dropout_rate, c.kv_heads) == (1, 1, 0.0, 1)
    assert cfg.model.heads is Heads.one and cfg.model.depth is Depth.one


def test_variants_change_only_what_they_name(base):
    cfg, _ = typed_config("variant=rmsnorm")
    assert (cfg.model.norm, cfg.model.final_norm) == (Norm.rmsnorm, Norm.rmsnorm)
    cfg, _ = typed_config("variant=no_mlp")
    assert cfg.model.feed_forward is FeedForward.linear
    others = {k: v for k, v in vars(cfg.model).items() if k != "feed_forward"}
    assert others == {k: v for k, v in vars(base.model).items() if k != "feed_forward"}
    assert vars(cfg.preset) == vars(base.model)  # the preset record is the preset's file, untouched


def test_swiglu_matches_the_mlp_in_parameters_as_llama_rounds_8c_over_3():
    cfg, _ = typed_config("variant=swiglu")
    c = model_config(cfg.model, cfg.scale, vocab_size=80)
    assert c.feed_forward_width == 88  # int(8 * 32 / 3) = 85, up to a multiple of 8
    cfg, _ = typed_config("variant=swiglu", "scale=large")
    assert model_config(cfg.model, cfg.scale, vocab_size=80).feed_forward_width == 1024  # 8 * 384 / 3 exactly


def test_bitnet_variants_train_with_bitnets_recipe_a_higher_peak_then_a_cool_down(base):
    for variant in ("bitlinear", "binary"):
        cfg, _ = typed_config(f"variant={variant}")
        assert cfg.optimizer.name == "adamw_cosine"
        assert cfg.optimizer.schedule["max_lr"] == pytest.approx(2 * base.optimizer.max_lr)
        assert cfg.optimizer.schedule["base_lr"] == pytest.approx(0.04 * base.optimizer.max_lr)


def test_scale_and_learning_rate_overrides():
    cfg, _ = typed_config("scale=large", "optimizer.base_lr=2e-4", "optimizer.max_lr=9e-4")
    assert cfg.optimizer.algorithm["lr"] == 2e-4 and cfg.optimizer.schedule["max_lr"] == 9e-4
    assert (cfg.scale.base_lr, cfg.scale.max_lr) == (3e-4, 6e-4)
    cfg, _ = typed_config("scale.base_lr=1e-4")  # overriding the preset's rate moves the optimizer's with it
    assert cfg.optimizer.base_lr == 1e-4 and cfg.optimizer.max_lr == 5e-3


@pytest.mark.parametrize(
    "override, key",
    [
        ("scale.num_heads=four", "scale.num_heads"),
        ("train.iters=1.5", "train.iters"),
        ("model.implementation=fastest", "model.implementation"),
        ("model.norm=batchnorm", "model.norm"),
        ("model.residual=maybe", "model.residual"),
        ("scale.foo=1", "scale.foo"),
        ("optimizer=adam", "optimizer"),
        ("variant=no_attention", "variant"),
        ("model.kv_heads=two", "model.kv_heads"),
        ("train.eval=sometimes", "train.eval"),
    ],
)
def test_wrong_types_fail_at_compose_time(override, key):
    with pytest.raises(ConfigCompositionException) as excinfo:
        compose_config(override)
    assert key in str(excinfo.value)


def test_composing_a_config_imports_no_torch():
    """--help, --cfg and tab completion compose the config: they must not pay for importing torch."""
    script = "\n".join([
        "import runpy, sys",
        "sys.argv = ['run.py', '--cfg', 'job']",
        "try:",
        "    runpy.run_path('run.py', run_name='__main__')",
        "except SystemExit as e:",
        "    assert not e.code, e.code",
        "print('torch imported' if 'torch' in sys.modules else 'no torch')",
    ])
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "model:" in result.stdout  # it did compose and print the config
    assert result.stdout.strip().endswith("no torch"), result.stdout[-300:]


# ------------------------------------------------------------------------------- validate: what types cannot check


def _set(cfg: RunConfig, dotted: str, value) -> RunConfig:
    cfg = copy.deepcopy(cfg)
    *parents, leaf = dotted.split(".")
    node = cfg
    for part in parents:
        node = getattr(node, part)
    setattr(node, leaf, value)
    return cfg


def _rejects(cfg: RunConfig, *fragments: str, plain=None) -> str:
    with pytest.raises(UsageError) as excinfo:
        validate(cfg, plain)
    message = str(excinfo.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return message


def test_embedding_dim_not_divisible_by_num_heads(base):
    _rejects(_set(base, "scale.num_heads", 5), "scale.embedding_dim=32", "scale.num_heads=5")


@pytest.mark.parametrize(
    "key",
    ["scale.context_length", "scale.batch_size", "scale.embedding_dim", "scale.num_heads", "scale.num_layers",
     "train.iters", "train.eval_interval", "train.eval_iters", "train.replicas", "optimizer.base_lr",
     "optimizer.max_lr"],
)
@pytest.mark.parametrize("value", [0, -1])
def test_non_positive_values(base, key, value):
    _rejects(_set(base, key, value), f"{key}={value}", "positive")


@pytest.mark.parametrize("key", ["model.name", "scale.name"])
@pytest.mark.parametrize("name", ["../../evil", "/tmp/x", "a/b", "..", "", "x" * 65])
def test_preset_names_name_folders_and_are_never_paths(base, key, name):
    _rejects(_set(base, key, name), f"{key}={name!r} is not a name")


def test_a_job_folder_is_one_name_of_at_most_200_bytes():
    from drakegpt.schema import job_folder

    assert job_folder("data.artist=../../x,model=BigramLM") == "data.artist=..%2F..%2Fx,model=BigramLM"
    long_a, long_b = "logger.tags=[" + "é" * 150 + "a]", "logger.tags=[" + "é" * 150 + "b]"
    names = {job_folder(long_a), job_folder(long_b)}
    assert len(names) == 2 and all(len(n.encode()) <= 200 and "/" not in n for n in names)


def test_replicas_above_the_cap_are_refused_before_any_folder_is_planned(base):
    from drakegpt.schema import MAX_REPLICAS

    _rejects(_set(base, "train.replicas", 100000), "train.replicas=100000", f"above {MAX_REPLICAS}", "seed=")
    validate(_set(base, "train.replicas", MAX_REPLICAS))


@pytest.mark.parametrize("override", ["optimizer.base_lr=nan", "scale.dropout=inf", "generate.temperature=nan",
                                      "optimizer.algorithm.weight_decay=-inf", "generate.top_p=nan"])
def test_every_number_must_be_finite(override):
    cfg, resolved = typed_config(override)
    key = override.split("=")[0]
    _rejects(cfg, key, "not a finite number", plain=resolved)


@pytest.mark.parametrize("override", ["seed=18446744073709551616", "train.iters=99999999999999999999",
                                      "optimizer.schedule.step_size_up=-9223372036854775809"])
def test_integers_beyond_64_bits_are_refused(override):
    cfg, resolved = typed_config(override)
    _rejects(cfg, override.split("=")[0], "beyond 64 bits", plain=resolved)


@pytest.mark.parametrize("seed", [-1, 2**63 - 1])
def test_a_seed_leaves_room_for_its_replicas_and_evaluation_stream(base, seed):
    _rejects(_set(base, "seed", seed), f"seed={seed}")


def test_eval_interval_longer_than_the_run_is_fine(base):
    validate(_set(_set(base, "train.iters", 7), "train.eval_interval", 500))  # clamped by the trainer


def test_wandb_mode_takes_every_value_wandb_accepts(monkeypatch):
    for mode in ("online", "offline", "disabled", "shared", "dryrun", "run"):
        monkeypatch.setenv("WANDB_MODE", mode)
        assert typed_config("logger=wandb")[0].logger.mode.value == mode


@pytest.mark.parametrize("dropout", [-0.1, 1.0, 1.5])
def test_dropout_outside_unit_interval(base, dropout):
    _rejects(_set(base, "scale.dropout", dropout), f"scale.dropout={dropout}")


def test_max_lr_below_base_lr(base):
    cfg = _set(_set(base, "optimizer.base_lr", 1e-3), "optimizer.max_lr", 5e-4)
    _rejects(cfg, "optimizer.max_lr=0.0005", "optimizer.base_lr=0.001")
    validate(_set(cfg, "optimizer.max_lr", 1e-3))  # equal rates are a constant schedule


@pytest.mark.parametrize("key, value", [("generate.top_p", 0.0), ("generate.top_p", 1.5), ("generate.top_k", 0),
                                        ("generate.temperature", -1.0), ("train.compile", "maybe"),
                                        ("train.threads", 0), ("train.patience", -1)])
def test_other_bad_values(base, key, value):
    _rejects(_set(base, key, value), f"{key}={value}")


def test_temperatures_of_any_size_are_valid(base):
    for value in (0.0, 1e-300, 5e-324, 1e30):
        validate(_set(base, "generate.temperature", value))


# ---------------------------------------------------------------------------------------- experiments


def test_experiment_overfitting():
    cfg = compose_config("experiment=overfitting", hydra_config=True)
    assert cfg.model.name == "TransformerLM" and cfg.scale.name == "large"
    assert dict(cfg.hydra.sweeper.params) == {"remedy": "none,early_stopping,lr_decay,more_dropout,all"}
    assert cfg.hydra.mode.name == "MULTIRUN"  # a sweep by itself: no -m needed
    remedies = {name: typed_config("experiment=overfitting", f"remedy={name}")[0]
                for name in ("none", "early_stopping", "lr_decay", "more_dropout", "all")}

    def setting(c):
        return c.train.patience, c.optimizer.name, c.scale.dropout

    assert setting(remedies["none"]) == (0, "adamw_cyclic", 0.2)
    assert setting(remedies["early_stopping"]) == (4, "adamw_cyclic", 0.2)
    assert setting(remedies["lr_decay"]) == (0, "adamw_cosine", 0.2)
    assert setting(remedies["more_dropout"]) == (0, "adamw_cyclic", 0.35)
    assert setting(remedies["all"]) == (4, "adamw_cosine", 0.35)


@pytest.mark.parametrize("experiment", ["ablation", "additions"])
def test_ablation_experiments_sweep_every_variant_of_their_kind_over_three_seeds(experiment):
    """A new variant file joins its experiment by its name alone: no_* removes an idea, anything else adds one."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    cfg = compose_config(f"experiment={experiment}", hydra_config=True)
    assert cfg.model.name == "TransformerLM" and cfg.hydra.mode.name == "MULTIRUN"
    assert (cfg.seed, cfg.train.replicas) == (1, 3)  # three seeds, trained together
    swept = OverridesParser.create().parse_override(f"variant={cfg.hydra.sweeper.params.variant}").value()
    variants = swept.filter(group_options("variant"))
    removals = [v for v in group_options("variant") if v.startswith("no_")]
    expected = ["baseline", *removals] if experiment == "ablation" else [
        v for v in group_options("variant") if v not in removals]
    assert sorted(variants) == sorted(expected) and "baseline" in variants
    for variant in variants:
        typed, resolved = typed_config(f"experiment={experiment}", f"variant={variant}")
        validate(typed, resolved)


def test_hparams_search_transformer_optuna():
    cfg = compose_config("hparams_search=transformer_optuna", hydra_config=True)
    sweeper = cfg.hydra.sweeper
    assert "OptunaSweeper" in sweeper._target_ and sweeper.direction == "minimize" and sweeper.n_trials == 20
    assert cfg.hydra.mode.name == "MULTIRUN"
    assert cfg.optimized_metric == "best_val_loss"
    assert dict(sweeper.params) == {
        "optimizer.base_lr": "interval(1e-4, 1e-3)",
        "optimizer.max_lr": "interval(1e-3, 1e-2)",
        "scale.dropout": "choice(0.0, 0.1, 0.2, 0.3)",
    }


def readme_commands():
    """Every `python run.py ...` line of the README's code blocks, continuation lines joined."""
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    lines = " ".join(blocks).replace("\\\n", " ").splitlines()
    return [line.split("#")[0].strip() for line in lines if line.strip().startswith("python run.py")]


@pytest.mark.parametrize("command", readme_commands())
def test_every_readme_command_parses_and_composes(command):
    """What a user pastes works: Hydra parses every override (quoting included), and a single run composes."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    args = [a for a in shlex.split(re.sub(r"<[^>]+>", "x", command))[2:] if not a.startswith("--")]
    sweep = "-m" in args
    args = [a for a in args if a != "-m"]
    parsed = OverridesParser.create().parse_overrides(args)
    if not sweep and not any(o.is_sweep_override() for o in parsed):
        typed_config(*args)


def test_the_readme_bad_input_table_quotes_a_prompt_hydra_parses():
    from hydra.core.override_parser.overrides_parser import OverridesParser

    rows = [line for line in (ROOT / "README.md").read_text().splitlines() if "generate.prompt" in line and "€" in line]
    quoted = re.search(r"`'(generate\.prompt=.*?)'`", rows[0]).group(1)
    (override,) = OverridesParser.create().parse_overrides([quoted])
    assert override.value() == "yo €"
