"""From a data source to batches: vocabulary, the four sources, the one-line errors, windows."""

import functools
import os
import importlib
import sys
import time
import zipfile
from dataclasses import replace
from importlib import resources
from pathlib import Path

import pandas as pd
import pytest
import torch

from helpers.runs import typed_config
from drakegpt.schema import DataConfig, DataSource
from drakegpt.data import CharVocab, build_corpus, gather, load_text, random_starts
from drakegpt.errors import UsageError

SAMPLE_ARTISTS = ["Juno Vale", "Marlow Reed", "Night Shift Choir"]


def data_config(source: DataSource, **values) -> DataConfig:
    """conf/data/<source>.yaml as composed, with `values` set."""
    return replace(typed_config(f"data={source.value}")[0].data, **values)


def usage_error(excinfo, *fragments: str) -> str:
    """The message of a UsageError: one line that names the problem."""
    message = str(excinfo.value)
    assert excinfo.type is UsageError
    assert message and "\n" not in message, repr(message)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return message


@functools.lru_cache(maxsize=None)
def drake_text(path: str) -> str:
    return load_text(data_config(source=DataSource.csv, path=path))


# ---------------------------------------------------------------------------------------------------------------
# CharVocab


def test_char_vocab_round_trip():
    text = "hello world\nit's me, Drake!"
    vocab = CharVocab.from_text(text)
    assert vocab.chars == "".join(sorted(set(text)))
    assert len(vocab) == len(set(text))
    ids = vocab.encode(text)
    assert ids.dtype == torch.long and ids.shape == (len(text),)
    assert [vocab.chars[i] for i in ids.tolist()] == list(text)
    assert vocab.decode(ids.tolist()) == text
    assert vocab.decode(vocab.encode("")) == ""


def test_char_vocab_unknown_lists_unseen_characters():
    vocab = CharVocab.from_text("abc ")
    assert vocab.unknown("a b c") == []
    assert vocab.unknown("cab€!x!€") == ["!", "x", "€"]
    with pytest.raises(KeyError):
        vocab.encode("€")


# ---------------------------------------------------------------------------------------------------------------
# Drake.csv


def test_drake_csv_text(drake_csv):
    text = drake_text(str(drake_csv))
    assert len(text) == 1_073_351
    assert len(set(text)) == 80
    frame = pd.read_csv(drake_csv)
    assert text == "\n".join(frame["Lyric"].dropna().astype(str))
    # data.artist=Drake keeps every row of this one-artist file
    assert load_text(data_config(source=DataSource.csv, path=str(drake_csv), artist="Drake")) == text


def test_drake_train_split_is_first_ninety_percent(drake_csv):
    text = drake_text(str(drake_csv))
    corpus = build_corpus(data_config(source=DataSource.csv, path=str(drake_csv)), context_length=8)
    assert len(corpus.vocab) == 80
    n_train = int(0.9 * len(text))
    assert len(corpus.train) == n_train and len(corpus.val) == len(text) - n_train
    assert corpus.vocab.decode(corpus.train[:2000].tolist()) == text[:2000]
    assert corpus.vocab.decode(corpus.train[-2000:].tolist()) == text[n_train - 2000 : n_train]
    assert corpus.vocab.decode(corpus.val.tolist()) == text[n_train:]


# ---------------------------------------------------------------------------------------------------------------
# The shipped sample


def _sample_frame() -> pd.DataFrame:
    with resources.as_file(resources.files("drakegpt") / "sample_data" / "lyrics.csv") as path:
        return pd.read_csv(path)


def test_sample_corpus():
    frame = _sample_frame()
    assert {"Artist", "Title", "Album", "Year", "Date", "Lyric"} <= set(frame.columns)
    text = load_text(data_config(source=DataSource.sample))
    assert len(text) >= 50_000
    assert text == "\n".join(frame["Lyric"].dropna().astype(str))
    assert sorted(frame["Artist"].unique()) == SAMPLE_ARTISTS


def test_sample_artist_filter():
    frame = _sample_frame()
    whole = load_text(data_config(source=DataSource.sample))
    for artist in SAMPLE_ARTISTS:
        text = load_text(data_config(source=DataSource.sample, artist=artist))
        assert text == "\n".join(frame.loc[frame["Artist"] == artist, "Lyric"].dropna().astype(str))
        assert 0 < len(text) < len(whole)
        others = frame.loc[frame["Artist"] != artist, "Lyric"].dropna().astype(str)
        assert not any(lyric in text for lyric in others)


def test_sample_unknown_artist_lists_artists():
    with pytest.raises(UsageError) as excinfo:
        load_text(data_config(source=DataSource.sample, artist="Drake"))
    usage_error(excinfo, "'Drake'", ", ".join(SAMPLE_ARTISTS))


# ---------------------------------------------------------------------------------------------------------------
# Bad input: one UsageError with one line each


@pytest.mark.parametrize("source", [DataSource.csv, DataSource.text])
def test_missing_file(tmp_path, source):
    missing = tmp_path / "nope.csv"
    with pytest.raises(UsageError) as excinfo:
        load_text(data_config(source=source, path=str(missing)))
    usage_error(excinfo, "data.path", str(missing), "no such file")


@pytest.mark.parametrize("source", [DataSource.csv, DataSource.text])
def test_empty_file(tmp_path, source):
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    with pytest.raises(UsageError) as excinfo:
        load_text(data_config(source=source, path=str(empty)))
    usage_error(excinfo, str(empty), "empty")


def test_csv_without_lyric_column(tmp_path):
    path = tmp_path / "songs.csv"
    path.write_text("Artist,Title,Words\nDrake,One Dance,baby i like your style\n", encoding="utf-8")
    with pytest.raises(UsageError) as excinfo:
        load_text(data_config(source=DataSource.csv, path=str(path)))
    usage_error(excinfo, str(path), "'Lyric'", "Artist, Title, Words", "data.column")
    # naming the right column reads it
    assert load_text(data_config(source=DataSource.csv, path=str(path), column="Words")) == "baby i like your style"


def test_csv_rows_without_lyrics(tmp_path):
    path = tmp_path / "songs.csv"
    path.write_text("Artist,Title,Lyric\nDrake,Intro,\nDrake,Outro,\n", encoding="utf-8")
    with pytest.raises(UsageError) as excinfo:
        load_text(data_config(source=DataSource.csv, path=str(path)))
    usage_error(excinfo, str(path), "no rows with lyrics", "'Lyric'")


@pytest.mark.parametrize("source", [DataSource.csv, DataSource.text])
def test_non_utf8_file(tmp_path, source):
    path = tmp_path / "latin1.csv"
    path.write_bytes("Artist,Lyric\nDrake,caf\u00e9 au lait\n".encode("latin-1"))
    with pytest.raises(UsageError) as excinfo:
        load_text(data_config(source=source, path=str(path)))
    usage_error(excinfo, str(path), "not UTF-8")


@pytest.mark.parametrize("source", [DataSource.csv, DataSource.text])
def test_path_unset(source):
    with pytest.raises(UsageError) as excinfo:
        load_text(data_config(source=source))
    usage_error(excinfo, "data.path is not set")


def test_context_length_validation_split_cannot_fill(tmp_path):
    path = tmp_path / "short.txt"
    path.write_text("abcdefghij" * 10, encoding="utf-8")  # 90 training and 10 validation characters
    cfg = data_config(source=DataSource.text, path=str(path))
    corpus = build_corpus(cfg, context_length=9)
    assert len(corpus.train) == 90 and len(corpus.val) == 10
    with pytest.raises(UsageError) as excinfo:
        build_corpus(cfg, context_length=20)
    usage_error(excinfo, "validation split has 10 characters", "scale.context_length=20")


def test_text_source_reads_the_file(tmp_path):
    path = tmp_path / "poem.txt"
    path.write_text("started from the bottom\nnow we're here €\n", encoding="utf-8")
    assert load_text(data_config(source=DataSource.text, path=str(path))) == path.read_text(encoding="utf-8")


# ---------------------------------------------------------------------------------------------------------------
# Windows


def test_gather_windows_and_targets():
    gen = torch.Generator().manual_seed(0)
    data = torch.randint(50, (300,), generator=gen)
    L = 7
    starts = random_starts(data, 64, L, gen)
    assert starts.shape == (64,) and int(starts.min()) >= 0 and int(starts.max()) + L < len(data)
    starts = torch.cat([starts, torch.tensor([0, len(data) - L - 1])])
    x, y = gather(data, starts, L)
    assert x.shape == y.shape == (len(starts), L)
    for row, s in enumerate(starts.tolist()):
        assert torch.equal(x[row], data[s : s + L])
        assert torch.equal(y[row], data[s + 1 : s + L + 1])
    assert torch.equal(y[:, :-1], x[:, 1:])  # y is x shifted by one


# ---------------------------------------------------------------------------------------------------------------
# Kaggle: only the network call is replaced


# Like the dataset's other files: no space in the file name, the full name in the Artist column.
OTHER_ARTIST_CSV = (
    ",Artist,Title,Album,Year,Date,Lyric\n"
    "0,Marlow Reed,Tin Roof,Porch Light,2019,2019-05-03,rain on a tin roof counting time\n"
    "1,Marlow Reed,Low Gear,Porch Light,2019,2019-05-03,low gear on the county road\n"
)


def _kaggle_env(monkeypatch, home: Path, credentials: bool) -> None:
    home.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(home / ".kaggle"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.delenv("KAGGLE_API_TOKEN", raising=False)
    if credentials:
        monkeypatch.setenv("KAGGLE_USERNAME", "drakegpt-test")
        monkeypatch.setenv("KAGGLE_KEY", "0123456789abcdef0123456789abcdef")
    else:
        monkeypatch.delenv("KAGGLE_USERNAME", raising=False)
        monkeypatch.delenv("KAGGLE_KEY", raising=False)
    extended = sys.modules.get("kaggle.api.kaggle_api_extended")
    if extended is not None:
        # The client fixes its config file when first imported; keep it inside this test's empty home.
        monkeypatch.setattr(extended.KaggleApi, "config_dir", str(home / ".kaggle"))
        monkeypatch.setattr(extended.KaggleApi, "config", str(home / ".kaggle" / "kaggle.json"))


def _kaggle_api_class():
    # `kaggle.api` is shadowed by the package's KaggleApi instance, so import the module by name.
    return importlib.import_module("kaggle.api.kaggle_api_extended").KaggleApi


SAMPLE_CSV = Path(str(resources.files("drakegpt") / "sample_data" / "lyrics.csv"))


def test_kaggle_download_then_offline(tmp_path, monkeypatch):
    """The shipped sample CSV stands in for the dataset's csv/Drake.csv: the whole path runs, but the network call."""
    _kaggle_env(monkeypatch, tmp_path / "home", credentials=True)
    calls = []

    def fake_download(self, dataset, path=None, force=False, quiet=True, unzip=False, licenses=()):
        """What the real call leaves behind: <path>/<dataset name>.zip, the CSVs under csv/."""
        calls.append(dataset)
        target = Path(path) / (dataset.split("/")[-1] + ".zip")
        with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as z:
            z.write(SAMPLE_CSV, "csv/Drake.csv")
            z.writestr("csv/MarlowReed.csv", OTHER_ARTIST_CSV)
            z.writestr("json/Drake.json", "{}")

    kaggle_api = _kaggle_api_class()
    monkeypatch.setattr(kaggle_api, "dataset_download_files", fake_download)
    cache = tmp_path / "cache"
    cfg = data_config(source=DataSource.kaggle, artist="Drake", cache_dir=str(cache))

    text = load_text(cfg)
    assert calls == ["deepshah16/song-lyrics-dataset"]
    assert text == load_text(data_config(source=DataSource.sample))
    extracted = cache / "deepshah16__song-lyrics-dataset" / "csv" / "Drake.csv"
    assert extracted.read_bytes() == SAMPLE_CSV.read_bytes()

    def offline(self, *args, **kwargs):
        raise ConnectionError("no network in this test")

    monkeypatch.setattr(kaggle_api, "dataset_download_files", offline)
    assert load_text(cfg) == text  # from the cache, no download
    # another artist of the downloaded archive, still offline
    other = load_text(data_config(source=DataSource.kaggle, artist="MarlowReed", cache_dir=str(cache)))
    assert other == "rain on a tin roof counting time\nlow gear on the county road"
    with pytest.raises(UsageError) as excinfo:
        load_text(data_config(source=DataSource.kaggle, artist="Nobody", cache_dir=str(cache)))
    usage_error(excinfo, "csv/Nobody.csv", "Drake, MarlowReed")
    assert calls == ["deepshah16/song-lyrics-dataset"]


def test_kaggle_download_failure_is_one_line(tmp_path, monkeypatch):
    _kaggle_env(monkeypatch, tmp_path / "home", credentials=True)

    def offline(self, *args, **kwargs):
        raise ConnectionError("no network in this test")

    monkeypatch.setattr(_kaggle_api_class(), "dataset_download_files", offline)
    with pytest.raises(UsageError) as excinfo:
        load_text(data_config(source=DataSource.kaggle, artist="Drake", cache_dir=str(tmp_path / "cache")))
    usage_error(excinfo, "could not download deepshah16/song-lyrics-dataset", "ConnectionError", "data=csv")


def test_kaggle_refusing_the_token_is_one_line(tmp_path, monkeypatch):
    import requests

    _kaggle_env(monkeypatch, tmp_path / "home", credentials=True)

    def refused(self, *args, **kwargs):
        response = requests.Response()
        response.status_code = 401
        raise requests.HTTPError("401 Client Error: Unauthorized", response=response)

    monkeypatch.setattr(_kaggle_api_class(), "dataset_download_files", refused)
    with pytest.raises(UsageError) as excinfo:
        load_text(data_config(source=DataSource.kaggle, artist="Drake", cache_dir=str(tmp_path / "cache")))
    usage_error(excinfo, "HTTP 401", "kaggle.json", "data=csv")


def test_kaggle_without_credentials(tmp_path, monkeypatch, capsys):
    _kaggle_env(monkeypatch, tmp_path / "empty_home", credentials=False)
    cache = tmp_path / "cache"
    started = time.monotonic()
    with pytest.raises(UsageError) as excinfo:
        load_text(data_config(source=DataSource.kaggle, artist="Drake", cache_dir=str(cache)))
    elapsed = time.monotonic() - started
    usage_error(excinfo, "Kaggle is not authenticated", "data=csv")
    assert elapsed < 5, f"took {elapsed:.1f}s"
    captured = capsys.readouterr()
    assert captured.out == ""
    assert not any(cache.rglob("*.zip"))


def test_a_damaged_kaggle_download_in_the_cache_is_one_line(tmp_path, monkeypatch):
    _kaggle_env(monkeypatch, tmp_path / "home", credentials=True)
    cache = tmp_path / "cache" / "deepshah16__song-lyrics-dataset"
    cache.mkdir(parents=True)
    (cache / "song-lyrics-dataset.zip").write_bytes(b"PK\x03\x04 cut off")
    with pytest.raises(UsageError) as excinfo:
        load_text(data_config(source=DataSource.kaggle, artist="Drake", cache_dir=str(tmp_path / "cache")))
    usage_error(excinfo, "song-lyrics-dataset.zip is damaged", "delete it")


def test_a_damaged_member_of_a_cached_download_is_one_line(tmp_path, monkeypatch):
    _kaggle_env(monkeypatch, tmp_path / "home", credentials=True)
    cache = tmp_path / "cache" / "deepshah16__song-lyrics-dataset"
    cache.mkdir(parents=True)
    archive = cache / "song-lyrics-dataset.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("csv/Drake.csv", "Artist,Lyric\n" + "Juno Vale,la la la\n" * 200)
    raw = bytearray(archive.read_bytes())
    start = raw.index(b"csv/Drake.csv") + len("csv/Drake.csv") + 20  # inside the compressed data
    raw[start:start + 40] = bytes(40)
    archive.write_bytes(bytes(raw))
    with pytest.raises(UsageError) as excinfo:
        load_text(data_config(source=DataSource.kaggle, artist="Drake", cache_dir=str(tmp_path / "cache")))
    usage_error(excinfo, "song-lyrics-dataset.zip is damaged", "csv/Drake.csv", "delete it")


def test_an_artist_of_digits_is_found_in_a_column_of_numbers(tmp_path):
    path = tmp_path / "numbers.csv"
    path.write_text("Artist,Lyric\n123,one two three\n456,four five six\n")
    assert load_text(data_config(source=DataSource.csv, path=str(path), artist="123")) == "one two three"
    with pytest.raises(UsageError) as excinfo:
        load_text(data_config(source=DataSource.csv, path=str(path), artist="789"))
    usage_error(excinfo, "Artist='789'", "123, 456")


def test_a_test_split_is_cut_from_the_end_and_the_seed_split_stays_the_default():
    text = load_text(data_config(source=DataSource.sample))
    seed = build_corpus(data_config(source=DataSource.sample), 8)
    assert len(seed.train) == int(0.9 * len(text)) and len(seed.test) == 0 and "test" not in seed.splits
    held = build_corpus(data_config(source=DataSource.sample, train_fraction=0.8, test_fraction=0.1), 8)
    n = len(text)
    assert (len(held.train), len(held.test)) == (int(0.8 * n), int(0.1 * n))
    assert len(held.train) + len(held.val) + len(held.test) == n
    assert torch.equal(torch.cat([held.train, held.val, held.test]), seed.vocab.encode(text))
    assert held.digest() != build_corpus(data_config(source=DataSource.sample, train_fraction=0.8), 8).digest()


def test_a_csv_with_a_byte_order_mark_reads_like_any_other(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes("\ufeffArtist,Lyric\nJuno Vale,la la la\nMarlow Reed,oh oh\n".encode("utf-8"))
    assert load_text(data_config(source=DataSource.csv, path=str(path), artist="Marlow Reed")) == "oh oh"


@pytest.mark.parametrize("dataset", ["..", ".", "x\\y", ""])
def test_a_dataset_name_never_leads_out_of_the_cache(tmp_path, monkeypatch, dataset):
    _kaggle_env(monkeypatch, tmp_path / "home", credentials=True)
    with pytest.raises(UsageError) as excinfo:
        load_text(data_config(DataSource.kaggle, artist="Drake", dataset=dataset, cache_dir=str(tmp_path / "cache")))
    usage_error(excinfo, "is not a Kaggle dataset name")
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize("artist", ["../../../secret", "/etc/passwd", "a/b", "..", "x\\y"])
def test_an_artist_is_a_file_name_never_a_path(tmp_path, monkeypatch, artist):
    _kaggle_env(monkeypatch, tmp_path / "home", credentials=True)
    (tmp_path / "secret.csv").write_text("Artist,Lyric\nX,not for training\n")
    with pytest.raises(UsageError) as excinfo:
        load_text(data_config(DataSource.kaggle, artist=artist, cache_dir=str(tmp_path / "cache")))
    usage_error(excinfo, "is not a file name")
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*.csv"))


def test_a_hostile_archive_member_is_never_extracted_outside_the_cache(tmp_path, monkeypatch):
    _kaggle_env(monkeypatch, tmp_path / "home", credentials=True)
    cache = tmp_path / "cache" / "deepshah16__song-lyrics-dataset"
    cache.mkdir(parents=True)
    with zipfile.ZipFile(cache / "song-lyrics-dataset.zip", "w") as z:
        z.writestr("csv/../../../escaped.csv", OTHER_ARTIST_CSV)
        z.writestr("csv/Drake.csv", OTHER_ARTIST_CSV)
    for artist in ("../../../escaped", "..%2F..%2Fescaped"):
        with pytest.raises(UsageError):
            load_text(data_config(DataSource.kaggle, artist=artist, cache_dir=str(tmp_path / "cache")))
    assert load_text(data_config(DataSource.kaggle, artist="Drake", cache_dir=str(tmp_path / "cache")))
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.csv")) == [
        Path("cache/deepshah16__song-lyrics-dataset/csv/Drake.csv")
    ]


@pytest.mark.parametrize("source", [DataSource.csv, DataSource.text])
def test_a_pipe_or_a_folder_as_the_data_file_is_one_line_not_a_hang(tmp_path, source):
    os.mkfifo(tmp_path / "pipe")
    for path, kind in ((tmp_path / "pipe", "not a regular file"), (tmp_path, "a folder")):
        with pytest.raises(UsageError) as excinfo:
            load_text(data_config(source, path=str(path)))
        usage_error(excinfo, kind)


def test_csv_cells_are_read_as_written(tmp_path):
    path = tmp_path / "cells.csv"
    path.write_text("Artist,Lyric\n007,0042\n007,1e3\n007,NA\n007,\n008,null\n")
    assert load_text(data_config(source=DataSource.csv, path=str(path), artist="007")) == "0042\n1e3\nNA"
    assert load_text(data_config(source=DataSource.csv, path=str(path))) == "0042\n1e3\nNA\nnull"
