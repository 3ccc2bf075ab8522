"""drakegpt/identity.py: the fingerprint, the digest and the variant of a run."""

from drakegpt.identity import choice_diff, digest, fingerprint, switch_diff, variant_parts
from helpers.runs import typed_config

DEFAULTS = {"model": "TransformerLM", "scale": "default", "optimizer": "adamw_cyclic", "data": "sample",
            "logger": "wandb", "remedy": "none", "variant": None}


def test_the_fingerprint_ignores_what_never_changes_the_numbers():
    _, base = typed_config()
    _, other_device = typed_config("device=cpu", "train.threads=1", "logger=none", "generate.length=9",
                                   "train.sample_length=0", "train.publish=false")
    assert fingerprint(base) == fingerprint(other_device) and digest(base) == digest(other_device)


def test_whatever_changes_the_numbers_changes_the_digest():
    _, base = typed_config()
    for overrides in (["seed=2"], ["data=csv", "data.path=x.csv"], ["optimizer=sgd_cyclic"], ["train.replicas=2"],
                      ["train.precision=bf16"], ["train.compile=true"], ["train.eval=random"], ["model.norm=none"],
                      ["scale.dropout=0.2"], ["data.test_fraction=0.05"]):
        _, other = typed_config(*overrides)
        assert digest(other) != digest(base), overrides
    # What `auto` resolved to, where the config says auto: another device, precision or compile, another digest.
    assert digest(base, {"precision": "fp32"}) != digest(base, {"precision": "bf16"})
    assert digest(base, {"device": "cpu"}) != digest(base, {"device": "cuda"})


def test_the_variant_says_which_switches_choices_and_overrides_differ_from_the_preset():
    _, resolved = typed_config("model=TransformerLM", "model.norm=none", "variant=gelu")
    assert switch_diff(resolved) == ["activation=gelu", "norm=none"]
    overrides = ["model=TransformerLM", "model.norm=none", "variant=gelu", "seed=3", "scale.dropout=0.3",
                 "train.threads=1", "remedy=lr_decay"]
    choices = {**DEFAULTS, "variant": "gelu", "remedy": "lr_decay"}
    assert variant_parts(resolved, overrides, choices, DEFAULTS) == [
        "activation=gelu", "norm=none", "remedy=lr_decay", "scale.dropout=0.3"]
    _, preset = typed_config("model=BlocksLM", "model.feed_forward=linear")  # the preset's own value
    assert variant_parts(preset, ["model=BlocksLM", "model.feed_forward=linear"], DEFAULTS, DEFAULTS) == []


def test_a_variant_that_changes_another_group_names_that_group():
    _, muon = typed_config("variant=muon")
    choices = {**DEFAULTS, "variant": "muon", "optimizer": "muon"}
    assert switch_diff(muon) == [] and choice_diff(choices, DEFAULTS) == ["optimizer=muon"]


def test_config_diff_names_each_changed_key_and_counts_the_rest():
    from drakegpt.identity import config_diff

    _, a = typed_config()
    _, b = typed_config("model.norm=none", "optimizer.max_lr=0.01", "scale.dropout=0.2", "seed=4",
                        "train.threads=1")  # threads: not part of the run
    # model.norm, optimizer.max_lr, optimizer.schedule.max_lr (it follows max_lr), scale.dropout, seed; sorted
    assert config_diff(a, b, limit=2) == "model.norm: layernorm -> none; optimizer.max_lr: 0.005 -> 0.01; and 3 more"
    assert config_diff(a, a) == ""
