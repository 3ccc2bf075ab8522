"""drakegpt/overrides.py: the one place override keys are read, and the typo check that names the closest key."""

from drakegpt.overrides import as_dict, key_of, sweep_keys, unknown_key, value_of
from drakegpt.schema import RunConfig


def test_keys_and_values():
    assert key_of("+train.iters=5") == "train.iters" and key_of("~model.norm") == "model.norm"
    assert key_of("++optimizer.algorithm.foreach=false") == "optimizer.algorithm.foreach"
    assert value_of("a=b=c") == "b=c" and value_of("~x") is None
    assert as_dict(["seed=1", "seed=2", "model=BlocksLM"]) == {"seed": "2", "model": "BlocksLM"}


def test_a_key_no_config_has_is_named_with_the_closest_one():
    assert unknown_key(["train.iter=5"], RunConfig).endswith("did you mean train.iters?")
    assert "did you mean train.eval_iters?" in unknown_key(["+train.eval_itres=5"], RunConfig)
    assert "did you mean model.kv_heads?" in unknown_key(["model.kv_head=2"], RunConfig)
    assert "--cfg job" in unknown_key(["zzzz=1"], RunConfig)  # nothing close: where to look


def test_every_real_key_and_what_is_not_an_override_pass():
    good = ["seed=1", "model=BlocksLM", "model.norm=none", "scale.num_heads=2", "train.iters=5", "variant=gelu",
            "+experiment=ablation", "hydra/launcher=joblib", "hydra.sweep.dir=x", "optimizer.algorithm.fused=false",
            "++optimizer.algorithm.foreach=false", "optimizer.schedule.step_size_up=10", "~logger.tags",
            "-m", "--cfg", "job", "--help", "generate.prompt=' yo'", "paths.registry_dir=r", "data.test_fraction=0.1"]
    assert unknown_key(good, RunConfig) is None


def test_sweep_keys_are_those_with_several_values():
    assert sweep_keys(["model=glob(*)", "seed=1,2", "train.iters=5", "scale.dropout=range(0,0.3,0.1)"]) == [
        "model", "seed", "scale.dropout"]
    assert sweep_keys(["variant=glob(*)", "seed=1,2", "variant=baseline", "variant=a,b"]) == ["variant", "seed"]
    assert sweep_keys(["variant=glob(*)", "seed=1,2", "variant=baseline"]) == ["seed"]
