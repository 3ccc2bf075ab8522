"""drakegpt/files.py: crash-safe writes, file and folder checks, damaged JSON, writes that never follow links."""

import os

import pytest

from drakegpt.errors import UsageError
from drakegpt.files import append_line, atomic_write, atomic_write_all, read_json, regular_file, writable_folder


def test_a_group_of_files_is_replaced_together_or_not_at_all(tmp_path):
    a, b = tmp_path / "a", tmp_path / "sub" / "b"
    atomic_write_all([(a, lambda f: f.write(b"1")), (b, lambda f: f.write(b"1"))])

    def fail(f):
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write_all([(a, lambda f: f.write(b"2")), (b, fail)])
    assert a.read_bytes() == b.read_bytes() == b"1"  # the first file was not replaced alone
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a", "b", "sub"]  # no temporary left behind


def test_regular_files_and_writable_folders(tmp_path):
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "file").write_text("x")
    assert regular_file(tmp_path / "file", "k") == tmp_path / "file"
    for path, message in ((tmp_path / "pipe", "not a regular file"), (tmp_path, "a folder"),
                          (tmp_path / "none", "no such file")):
        with pytest.raises(UsageError, match=message):
            regular_file(path, "k")
    assert writable_folder(tmp_path / "new" / "deep", "k").is_dir()
    with pytest.raises(UsageError, match="k=.* is not writable"):
        writable_folder(tmp_path / "file" / "below", "k")


def test_a_damaged_json_file_is_one_line_that_names_it(tmp_path):
    assert read_json(tmp_path / "none.json") == {}
    for name, content in (("cut.json", b'{"step": 1'), ("binary.json", b"\xff\xfe\x00"), ("list.json", b"[1]")):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(UsageError) as damaged:
            read_json(tmp_path / name)
        message = str(damaged.value)
        assert str(tmp_path / name) in message and "restore it or delete it" in message and "\n" not in message


def test_writes_replace_a_link_or_refuse_it_never_write_through_it(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("keep")
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "sample.txt").symlink_to(outside)
    atomic_write(folder / "sample.txt", lambda f: f.write(b"new"))
    assert outside.read_text() == "keep" and not (folder / "sample.txt").is_symlink()
    (folder / "metrics.csv").symlink_to(outside)
    with pytest.raises(OSError):
        append_line(folder / "metrics.csv", "1,2\n")
    assert outside.read_text() == "keep"
