"""From a data source to batches: text -> CharVocab -> train/val token tensors -> windows.

Sources: `sample` (the corpus shipped in the package), `csv` (a lyrics CSV shaped like the Kaggle
dataset's), `text` (any UTF-8 file) and `kaggle` (downloaded once into a cache, then read offline).
"""

import contextlib
import hashlib
import io
import zipfile
import zlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

import torch

from drakegpt.schema import DataConfig, DataSource
from drakegpt.errors import UsageError
from drakegpt.files import atomic_write, is_file_name, regular_file

MAX_LISTED = 20  # names listed in an error line


@dataclass(frozen=True)
class CharVocab:
    """The sorted distinct characters of the training text; a character's id is its index."""

    chars: str

    @classmethod
    def from_text(cls, text: str) -> "CharVocab":
        return cls("".join(sorted(set(text))))

    def __len__(self) -> int:
        return len(self.chars)

    def unknown(self, text: str) -> List[str]:
        return sorted(set(text) - set(self.chars))

    def encode(self, text: str) -> torch.Tensor:
        index = {c: i for i, c in enumerate(self.chars)}
        return torch.tensor([index[c] for c in text], dtype=torch.long)

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(self.chars[i] for i in ids)


@dataclass
class Corpus:
    vocab: CharVocab
    train: torch.Tensor
    val: torch.Tensor
    test: torch.Tensor  # empty unless data.test_fraction > 0

    @property
    def splits(self) -> Dict[str, torch.Tensor]:
        return {name: t for name, t in (("train", self.train), ("val", self.val), ("test", self.test)) if len(t)}

    def digest(self) -> str:
        """sha256 of the tokens of every split: a resume refuses text that changed, even with the same characters."""
        h = hashlib.sha256(self.vocab.chars.encode())
        for split in (self.train, self.val, self.test):
            h.update(len(split).to_bytes(8, "little"))  # where one split ends and the next begins
            h.update(split.numpy().tobytes())
        return h.hexdigest()


# Keys a source does not read: set with it, they are a mistake (most often a forgotten data=csv), not a no-op.
IGNORED_BY = {DataSource.sample: ("path",), DataSource.text: ("artist",), DataSource.kaggle: ("path",)}


def load_text(cfg: DataConfig) -> str:
    for key in IGNORED_BY.get(cfg.source, ()):
        if getattr(cfg, key) is not None:
            instead = ("add data=csv (a lyrics CSV) or data=text (a text file)" if key == "path" else
                       "use data=csv (a lyrics CSV with an Artist column)")
            raise UsageError(f"data.{key}={getattr(cfg, key)} is not read by data={cfg.source.value}; {instead}, or "
                             f"drop data.{key}")
    if cfg.source is DataSource.sample:
        with resources.as_file(resources.files("drakegpt") / "sample_data" / "lyrics.csv") as path:
            return read_lyrics_csv(path, cfg.artist, cfg.column)
    if cfg.source is DataSource.csv:
        return read_lyrics_csv(_existing(cfg.path, "data.path"), cfg.artist, cfg.column)
    if cfg.source is DataSource.text:
        path = _existing(cfg.path, "data.path")
        text = _decode(path.read_bytes(), path)
        if not text:
            raise UsageError(f"{path} is empty; point data.path at a text file with content")
        return text
    # The file is the artist's: csv/TaylorSwift.csv says "Taylor Swift" in its Artist column, so no filter.
    return read_lyrics_csv(kaggle_csv(cfg), None, cfg.column)


def _existing(path: Optional[str], key: str) -> Path:
    if not path:
        raise UsageError(f"{key} is not set; pass {key}=/path/to/file")
    return regular_file(Path(path), key)


def _decode(raw: bytes, path: Path) -> str:
    try:
        return raw.decode("utf-8-sig")  # a byte-order mark, as some spreadsheet exports write, is not text
    except UnicodeDecodeError as e:
        raise UsageError(f"{path} is not UTF-8 text (byte {e.start}); convert it with iconv -t UTF-8") from None


def read_lyrics_csv(path: Path, artist: Optional[str], column: str) -> str:
    """The lyrics of every row (of one artist, if asked), joined with newlines like the original."""
    import pandas as pd

    path = Path(path)
    text = _decode(path.read_bytes(), path)
    try:
        frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)  # cells as written: "0042", "NA"
    except pd.errors.EmptyDataError:
        raise UsageError(f"{path} is empty; point data.path at a lyrics CSV with a {column} column") from None
    except pd.errors.ParserError as e:
        raise UsageError(
            f"{path} is not a readable CSV ({str(e).splitlines()[0]}); for plain text use data=text"
        ) from None
    if column not in frame.columns:
        raise UsageError(
            f"{path} has no {column!r} column (columns: {', '.join(map(str, frame.columns))}); "
            f"set data.column to the lyrics column, or use data=text for plain text"
        )
    if artist is not None:
        if "Artist" not in frame.columns:
            raise UsageError(f"{path} has no 'Artist' column to filter by; drop data.artist")
        names = frame["Artist"]
        frame = frame[names == str(artist)]
        if frame.empty:
            present = sorted(set(names) - {""})
            shown = ", ".join(present[:MAX_LISTED]) + (f" and {len(present) - MAX_LISTED} more" if len(present) >
                                                       MAX_LISTED else "")
            raise UsageError(f"no rows with Artist={artist!r} in {path}; artists present: {shown}")
    lyrics = frame[column][frame[column] != ""]
    if lyrics.empty:
        raise UsageError(f"{path} has no rows with lyrics in column {column!r}; choose a file with songs in it")
    return "\n".join(lyrics)


def kaggle_csv(cfg: DataConfig) -> Path:
    """csv/<artist>.csv of the Kaggle dataset, downloaded into the cache on first use."""
    if not cfg.artist:
        raise UsageError("data.artist is not set; data=kaggle reads csv/<data.artist>.csv, e.g. data.artist=Drake")
    artist = cfg.artist
    if not is_file_name(artist):
        raise UsageError(
            f"data.artist={artist!r} is not a file name; data=kaggle reads csv/<data.artist>.csv, "
            f"e.g. data.artist=Drake"
        )
    if not is_file_name(cfg.dataset.replace("/", "__")):
        raise UsageError(f"data.dataset={cfg.dataset!r} is not a Kaggle dataset name; use <owner>/<dataset>, "
                         f"e.g. deepshah16/song-lyrics-dataset")
    cache = Path(cfg.cache_dir).expanduser() / cfg.dataset.replace("/", "__")
    target = cache / "csv" / f"{artist}.csv"
    if target.exists():
        return regular_file(target, "the cached CSV")
    archive = cache / f"{cfg.dataset.split('/')[-1]}.zip"
    if not archive.exists():
        _download(cfg.dataset, cache)
    regular_file(archive, "the cached download")
    try:
        z = zipfile.ZipFile(archive)
    except zipfile.BadZipFile:
        raise UsageError(
            f"the cached download {archive} is damaged; delete it and run again to download it anew"
        ) from None
    with z:
        member = f"csv/{artist}.csv"
        if member not in z.namelist():
            artists = sorted(Path(n).stem for n in z.namelist() if n.startswith("csv/") and n.endswith(".csv"))
            raise UsageError(f"the Kaggle dataset has no {member}; data.artist is one of: {', '.join(artists)}")
        try:
            contents = z.read(member)
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as e:
            raise UsageError(
                f"the cached download {archive} is damaged ({member}: {type(e).__name__}); delete it and run again to "
                f"download it anew"
            ) from None
        atomic_write(target, lambda f: f.write(contents))  # a cut-off extraction leaves no partial CSV
    return target


def _download(dataset: str, cache: Path) -> None:
    hint = "train on a downloaded file with data=csv data.path=/path/to/Drake.csv"
    # Importing kaggle prints a page of help when no credentials are found; we say it in one line.
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            from kaggle.api.kaggle_api_extended import KaggleApi

            api = KaggleApi()
            api.authenticate()
        except (Exception, SystemExit):
            raise UsageError(
                f"Kaggle is not authenticated: put your API token in ~/.kaggle/kaggle.json "
                f"(kaggle.com > Settings > API), or {hint}"
            ) from None
        cache.mkdir(parents=True, exist_ok=True)
        try:
            api.dataset_download_files(dataset, path=str(cache), quiet=True, unzip=False)
        except (Exception, SystemExit) as e:
            status = getattr(e, "status", None) or getattr(getattr(e, "response", None), "status_code", None)
            if status in (401, 403):
                raise UsageError(
                    f"Kaggle refused the download of {dataset} (HTTP {status}): renew the token in "
                    f"~/.kaggle/kaggle.json (kaggle.com > Settings > API), or {hint}"
                ) from None
            raise UsageError(
                f"could not download {dataset} from Kaggle ({type(e).__name__}): check the network, or {hint}"
            ) from None


def build_corpus(cfg: DataConfig, context_length: int) -> Corpus:
    """The first train_fraction of the characters train, the last test_fraction test, the rest validate."""
    text = load_text(cfg)
    vocab = CharVocab.from_text(text)
    data = vocab.encode(text)
    n_train, n_test = int(cfg.train_fraction * len(data)), int(cfg.test_fraction * len(data))
    corpus = Corpus(vocab, data[:n_train], data[n_train:len(data) - n_test], data[len(data) - n_test:])
    for split, tokens in (("training", corpus.train), ("validation", corpus.val), ("test", corpus.test)):
        if len(tokens) <= context_length and (split != "test" or cfg.test_fraction > 0):
            raise UsageError(
                f"the {split} split has {len(tokens)} characters, too few for scale.context_length={context_length}; "
                f"use more text or a smaller scale.context_length"
            )
    return corpus


def gather(data: torch.Tensor, starts: torch.Tensor, context_length: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Inputs and next-character targets of the windows starting at `starts`, in one indexing op each."""
    index = starts[..., None] + torch.arange(context_length, device=starts.device)
    return data[index], data[index + 1]


def random_starts(data: torch.Tensor, n: int, context_length: int, generator: torch.Generator) -> torch.Tensor:
    return torch.randint(len(data) - context_length, (n,), generator=generator)
