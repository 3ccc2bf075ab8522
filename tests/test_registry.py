"""drakegpt/registry.py: one entry per config (the identity), the choice rule, damaged entries, list and remove."""

import json
import logging
import shutil
from pathlib import Path

import pytest

from drakegpt import registry
from drakegpt.errors import UsageError
from helpers.runs import QUICK, ROOT, train_in_process


def publish_runs(tmp_path: Path, runs: dict) -> dict:
    published = {}
    for name, overrides in runs.items():
        summary = train_in_process(tmp_path / name, *QUICK, "train.iters=2", "train.eval_interval=2", *overrides,
                                   f"paths.registry_dir={tmp_path / 'registry'}")[0]
        published[name] = Path(summary["published"])
    return published


def test_whatever_changes_the_numbers_is_another_entry_and_nothing_else_is(tmp_path):
    """(train.compile, device and precision resolved from auto are in the digest too: tests/test_identity.py.)"""
    csv_data = tmp_path / "songs.csv"
    shutil.copy(ROOT / "drakegpt" / "sample_data" / "lyrics.csv", csv_data)
    runs = {"base": ["seed=1"], "seed": ["seed=2"], "data": ["seed=1", "data=csv", f"data.path={csv_data}",
                                                             "data.artist=Juno Vale"],
            "optimizer": ["seed=1", "optimizer=adamw_cosine"], "precision": ["seed=1", "train.precision=bf16"],
            "switch": ["seed=1", "model.norm=none"],
            "iters": ["seed=1", "train.iters=3", "train.eval_interval=3"]}
    published = publish_runs(tmp_path, runs)
    assert len(set(published.values())) == len(runs)  # one entry each
    contents = {name: path.read_bytes() for name, path in published.items()}
    # What does not change the numbers (threads, the sample, logging) replaces the same entry, and only it.
    again = publish_runs(tmp_path / "again", {"base": ["seed=1", "train.threads=2", "train.sample_length=5"]})
    assert again["base"].name == published["base"].name
    assert len(registry.entries(tmp_path / "registry")) == len(runs)
    for name, path in published.items():
        assert name == "base" or path.read_bytes() == contents[name]  # none replaced by another config
    replicas = train_in_process(tmp_path / "replicas", *QUICK, "train.iters=2", "train.eval_interval=2", "seed=1",
                                "train.replicas=2", f"paths.registry_dir={tmp_path / 'registry'}")
    assert Path(replicas[0]["published"]) not in published.values()  # seed 1 of a group is another run


def entry(tmp_path: Path, name: str, published_at: str, seed: int = 1, variant: str = "", **record) -> registry.Entry:
    """A registry entry written by hand: its .json and a .safetensors placeholder."""
    folder = tmp_path / "TransformerLM_default"
    folder.mkdir(parents=True, exist_ok=True)
    data = {"format": 3, "record": {"model": "TransformerLM", "scale": "default", "variant": variant, "seed": seed,
                                    "step": 10, "val_loss": 2.0, "published_at": published_at,
                                    "switches": {"name": "TransformerLM", "norm": "layernorm"}, "choices": {},
                                    **record},
            "run_config": {"train": {"iters": 10}, "data": {"source": "sample"}}}
    (folder / f"{name}.json").write_text(json.dumps(data))
    (folder / f"{name}.safetensors").write_bytes(b"")
    return registry._entry(folder / f"{name}.json")


SWITCHES = {"name": "TransformerLM", "norm": "layernorm"}


def test_the_most_recent_entry_of_the_model_is_chosen_and_the_seed_is_preferred(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    old = entry(tmp_path, "seed1-a", "2026-01-01T00:00:00")
    new = entry(tmp_path, "seed2-b", "2026-03-01T00:00:00", seed=2)
    middle = entry(tmp_path, "seed3-c", "2026-02-01T00:00:00", seed=3)
    choose = lambda seed=None, **narrowing: registry.choose(tmp_path, "TransformerLM", "default", SWITCHES,  # noqa
                                                            narrowing, {}, seed)
    assert choose().weights == new.weights
    assert choose(seed=3).weights == middle.weights and choose(seed=1).weights == old.weights
    assert choose(seed=9).weights == new.weights  # no run of that seed: it samples the most recent with seed 9
    assert "the most recent of 3 matching" in caplog.text and "generate.checkpoint" in caplog.text
    other = entry(tmp_path, "seed4-d", "2026-04-01T00:00:00", seed=4, switches={**SWITCHES, "norm": "none"})
    assert choose().weights == new.weights  # another model (its switches differ) is never taken
    assert registry.choose(tmp_path, "TransformerLM", "default", {**SWITCHES, "norm": "none"}, {}, {},
                           None).weights == other.weights


def test_only_the_asked_model_and_preset_are_taken_however_alike_their_switches(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    mine = entry(tmp_path, "seed1-a", "2026-01-01T00:00:00")
    for model, scale in (("BitNetLM", "default"), ("TransformerLM", "large")):  # newer, the same switches
        folder = tmp_path / f"{model}_{scale}"
        folder.mkdir()
        data = json.loads((tmp_path / "TransformerLM_default" / "seed1-a.json").read_text())
        data["record"].update(model=model, scale=scale, published_at="2026-06-01T00:00:00")
        (folder / "seed1-a.json").write_text(json.dumps(data))
        (folder / "seed1-a.safetensors").write_bytes(b"")
    chosen = registry.choose(tmp_path, "TransformerLM", "default", SWITCHES, {}, {}, None)
    assert chosen.weights == mine.weights and "the only match" in caplog.text


def test_switches_that_only_say_how_a_model_is_computed_do_not_tell_models_apart(tmp_path):
    entry(tmp_path, "seed1-a", "2026-01-01T00:00:00",
          switches={**SWITCHES, "name": "Other", "implementation": "naive", "cpu_kernels": False})
    assert registry.choose(tmp_path, "TransformerLM", "default", SWITCHES, {}, {}, None)
    with pytest.raises(UsageError):  # a switch the entry does not have is a difference, not a wildcard
        registry.choose(tmp_path, "TransformerLM", "default", {**SWITCHES, "qk_norm": True}, {}, {}, None)


def test_the_cli_filters_each_narrow_what_it_lists(tmp_path):
    entry(tmp_path, "seed1-a", "2026-01-01T00:00:00", variant="norm=none")
    entry(tmp_path, "seed2-b", "2026-02-01T00:00:00", seed=2)
    names = lambda **f: sorted(e.weights.stem for e in registry.matching(  # noqa: E731
        tmp_path, f.get("model"), f.get("scale"), f.get("seed"), f.get("variant"), f.get("before")))
    assert names() == ["seed1-a", "seed2-b"]
    assert names(seed=2) == ["seed2-b"] and names(variant="norm=none") == ["seed1-a"] and names(variant="") == [
        "seed2-b"]
    assert names(model="BlocksLM") == [] and names(scale="large") == [] and names(model="TransformerLM",
                                                                                    scale="default") == names()
    assert names(before="2026-02-01T00:00:00") == ["seed1-a"]  # strictly before


def test_overrides_given_at_generate_time_narrow_the_choice(tmp_path):
    entry(tmp_path, "seed1-a", "2026-01-01T00:00:00")
    long = entry(tmp_path, "seed1-b", "2026-01-02T00:00:00")
    (tmp_path / "TransformerLM_default" / "seed1-b.json").write_text(json.dumps({
        **json.loads((tmp_path / "TransformerLM_default" / "seed1-b.json").read_text()),
        "run_config": {"train": {"iters": 300}, "data": {"source": "sample"}}}))
    newest = entry(tmp_path, "seed1-c", "2026-01-03T00:00:00", choices={"optimizer": "muon"})
    choose = lambda narrowing, choices: registry.choose(tmp_path, "TransformerLM", "default", SWITCHES,  # noqa
                                                        narrowing, choices, None).weights
    assert choose({}, {}) == newest.weights
    assert choose({"train.iters": 300}, {}) == long.weights
    assert choose({}, {"optimizer": "muon"}) == newest.weights
    with pytest.raises(UsageError) as refused:
        choose({"train.iters": 7}, {})
    first, *listed = str(refused.value).splitlines()
    assert "no published TransformerLM at scale=default with train.iters=7" in first
    assert listed[0] == "published TransformerLM at scale=default:" and len(listed) == 4


def test_a_refusal_lists_what_is_published_on_lines_of_their_own_capped(tmp_path):
    for i in range(15):
        entry(tmp_path, f"seed{i}-x", f"2026-01-{i + 1:02d}T00:00:00", seed=i)
    with pytest.raises(UsageError) as refused:
        registry.choose(tmp_path, "BlocksLM", "default", {"name": "BlocksLM"}, {}, {}, None)
    first, heading, *listed = str(refused.value).splitlines()
    assert "no published BlocksLM at scale=default" in first and len(first) < 300
    assert heading == "published:" and len(listed) == registry.MAX_LISTED + 1
    assert "and 5 more: python -m drakegpt.registry list" in listed[-1]


def test_a_damaged_registry_entry_is_skipped_whatever_is_wrong_in_it(tmp_path, caplog):
    good = entry(tmp_path, "seed1-a", "2026-01-01T00:00:00")
    folder = tmp_path / "TransformerLM_default"
    damaged = {"seed9-0": "{broken", "seed8-1": '{"record": {"model": "TransformerLM"}}', "seed7-2": "[]",
               "seed6-3": json.dumps({"record": {**json.loads((folder / "seed1-a.json").read_text())["record"],
                                                 "val_loss": "low"}, "run_config": {}}),
               "seed5-4": json.dumps({"record": {**json.loads((folder / "seed1-a.json").read_text())["record"],
                                                 "seed": None}, "run_config": {}})}
    for name, text in damaged.items():
        (folder / f"{name}.json").write_text(text)
        (folder / f"{name}.safetensors").write_bytes(b"")
    assert [e.weights for e in registry.entries(tmp_path)] == [good.weights]
    assert all(f"{name}.json" in caplog.text for name in damaged)


def test_list_and_remove_by_a_filter_touch_nothing_else(tmp_path, capsys):
    folder = tmp_path / "registry"
    entry(folder, "seed1-a", "2026-01-01T00:00:00")
    entry(folder, "seed2-b", "2026-02-01T00:00:00", seed=2)
    (folder / "TransformerLM_default" / "notes.txt").write_text("mine")
    cli = ["--dir", str(folder)]
    assert registry.main(["list", *cli]) == 0
    listed = capsys.readouterr().out
    assert "2 published" in listed and "seed=2" in listed and "2026-02-01 00:00:00" in listed
    assert registry.main(["remove", *cli]) == 2  # no filter: nothing removed
    assert "at least one filter" in capsys.readouterr().err
    assert registry.main(["remove", "--before", "2026-01-15", *cli]) == 0
    assert "removed TransformerLM scale=default seed=1" in capsys.readouterr().out
    assert sorted(p.name for p in (folder / "TransformerLM_default").iterdir()) == [
        "notes.txt", "seed2-b.json", "seed2-b.safetensors"]
    assert registry.main(["remove", "--all", *cli]) == 0
    assert (folder / "TransformerLM_default" / "notes.txt").read_text() == "mine"  # never touches other files


def test_a_seed_that_is_not_a_number_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:
        registry.main(["list", "--seed", "abc", "--dir", str(tmp_path)])
    (line,) = capsys.readouterr().err.splitlines()
    assert exited.value.code == 2 and line.startswith("error: argument --seed") and "--help" in line


def test_a_date_that_is_not_one_removes_nothing(tmp_path, capsys):
    entry(tmp_path, "seed1-a", "2026-01-01T00:00:00")
    for bad in ("notadate", "12/01/2026", "2026-13-45"):
        assert registry.main(["remove", "--before", bad, "--dir", str(tmp_path)]) == 2
        assert f"--before {bad} is not a date" in capsys.readouterr().err
    assert len(registry.entries(tmp_path)) == 1


def test_weights_are_never_published_through_a_link_out_of_the_registry(tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (tmp_path / "registry").mkdir()
    (tmp_path / "registry" / "TransformerLM_default").symlink_to(outside)
    with pytest.raises(UsageError, match="is a symbolic link: weights are published only inside"):
        registry.check_folder(tmp_path / "registry", "TransformerLM", "default")
    entry(outside.parent / "copy", "seed1-a", "2026-01-01T00:00:00")
    (tmp_path / "registry" / "BlocksLM_default").symlink_to(outside.parent / "copy" / "TransformerLM_default")
    assert registry.entries(tmp_path / "registry") == []  # a linked folder is never listed, nor removed
