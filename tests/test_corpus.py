"""ByteCorpus: file discovery, the split by file, the cache, and deterministic windows."""

import os
import sysconfig
from pathlib import Path

import numpy as np
import pytest
import torch

from chunklm import ByteCorpus, CorpusError
from chunklm.corpus import _is_val

SEQ_LEN, CHUNK = 16, 4


def make_tree(root: Path, n_files: int = 60, size: int = 200) -> list[Path]:
    """n_files files of distinct bytes in nested directories, plus hidden and cache clutter."""
    files = []
    for i in range(n_files):
        path = root / f"pkg{i % 3}" / f"mod{i:02d}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(bytes((i * 7 + j) % 256 for j in range(size)))
        files.append(path)
    (root / ".git").mkdir()
    (root / ".git" / "HEAD").write_bytes(b"x" * 500)
    (root / "__pycache__").mkdir()
    (root / "__pycache__" / "mod.pyc").write_bytes(b"y" * 500)
    (root / ".hidden.py").write_bytes(b"z" * 500)
    return files


def corpus(paths, tmp_path, **kw) -> ByteCorpus:
    return ByteCorpus(paths, seq_len=kw.pop("seq_len", SEQ_LEN), chunk=CHUNK, cache_dir=tmp_path / "cache", **kw)


def test_directory_split_by_file_hash(tmp_path):
    """A directory's files split by a sha256 of their relative path; val bytes are those files."""
    files = make_tree(tmp_path / "data")
    c = corpus(tmp_path / "data", tmp_path, val_fraction=0.2)
    rels = sorted(f.relative_to(tmp_path / "data").as_posix() for f in files)
    val = [r for r in rels if _is_val(r, 0.2)]
    assert c.split == "file" and c.n_files == 60 and c.n_val_files == len(val) > 0
    expected_val = b"".join((tmp_path / "data" / r).read_bytes() for r in val)
    assert bytes(c._val) == expected_val
    assert c.n_train_bytes + c.n_val_bytes == 60 * 200  # hidden files and __pycache__ left out


def test_split_is_deterministic_and_about_val_fraction():
    """The split of a path is a pure function of it, and sends about val_fraction of paths to val."""
    rels = [f"lib/mod{i}.py" for i in range(4000)]
    share = np.mean([_is_val(r, 0.05) for r in rels])
    assert 0.04 < share < 0.06
    assert [_is_val(r, 0.05) for r in rels[:50]] == [_is_val(r, 0.05) for r in rels[:50]]


def test_single_file_falls_back_to_tail_split(tmp_path):
    """One file cannot split by file: validation is the tail of its bytes, at least one window."""
    path = tmp_path / "one.txt"
    path.write_bytes(bytes(range(256)) * 4)
    c = corpus(path, tmp_path, val_fraction=0.05)
    assert c.split == "tail" and c.n_files == 1
    assert c.n_val_bytes == max(SEQ_LEN + CHUNK, int(np.ceil(0.05 * 1024)))
    assert bytes(c._val) == path.read_bytes()[-c.n_val_bytes :]
    assert bytes(c._train) == path.read_bytes()[: -c.n_val_bytes]


def test_missing_path_is_an_error(tmp_path):
    """A path that does not exist is a CorpusError (a ValueError) naming it."""
    with pytest.raises(ValueError, match="does not exist: .*nope"):
        corpus(tmp_path / "nope", tmp_path)


def test_empty_corpus_is_an_error(tmp_path):
    """Files with no bytes make a CorpusError saying the corpus is empty."""
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a").write_bytes(b"")
    with pytest.raises(CorpusError, match="empty corpus"):
        corpus(tmp_path / "d", tmp_path)


def test_too_small_corpus_is_an_error(tmp_path):
    """A corpus that cannot hold a window on each side is a CorpusError naming the window."""
    path = tmp_path / "small.txt"
    path.write_bytes(b"x" * 30)
    with pytest.raises(CorpusError, match="seq_len \\+ chunk = 20"):
        corpus(path, tmp_path)


def test_cache_is_reused_and_refreshed_on_change(tmp_path):
    """A second corpus maps the same cache file; changing a file builds a new one."""
    files = make_tree(tmp_path / "data", n_files=10)
    first = corpus(tmp_path / "data", tmp_path)
    assert isinstance(first._train.base, np.memmap) or isinstance(first._train, np.memmap)
    built = first.cache_path.stat().st_mtime_ns
    second = corpus(tmp_path / "data", tmp_path)
    assert second.cache_path == first.cache_path and second.cache_path.stat().st_mtime_ns == built
    files[0].write_bytes(b"new content " * 40)
    os.utime(files[0], ns=(1, 1))
    third = corpus(tmp_path / "data", tmp_path)
    assert third.cache_path != first.cache_path
    assert b"new content" in bytes(third._train) + bytes(third._val)


def test_several_paths_and_duplicates(tmp_path):
    """Several paths concatenate in order; a file named twice counts once."""
    make_tree(tmp_path / "a", n_files=5)
    extra = tmp_path / "extra.bin"
    extra.write_bytes(b"\x00\xff" * 100)
    c = corpus([tmp_path / "a", extra, extra], tmp_path)
    assert c.n_files == 6
    assert c.n_train_bytes + c.n_val_bytes == 5 * 200 + 200


def test_train_batch_is_a_pure_function(tmp_path):
    """train_batch depends only on (seed, epoch, step, micro_step, rank): same args, same windows."""
    make_tree(tmp_path / "data")
    c = corpus(tmp_path / "data", tmp_path)
    a = c.train_batch(5, seed=1, epoch=2, step=3, micro_step=1, rank=0)
    assert a.shape == (5, SEQ_LEN + CHUNK) and a.dtype == torch.int64
    assert torch.equal(a, corpus(tmp_path / "data", tmp_path).train_batch(5, seed=1, epoch=2, step=3, micro_step=1))
    for other in (dict(seed=2), dict(epoch=3), dict(step=4), dict(micro_step=0), dict(rank=1)):
        args = {**dict(seed=1, epoch=2, step=3, micro_step=1, rank=0), **other}
        assert not torch.equal(a, c.train_batch(5, **args)), other


def test_train_windows_are_contiguous_train_bytes(tmp_path):
    """Each training window is a contiguous slice of the training bytes."""
    make_tree(tmp_path / "data")
    c = corpus(tmp_path / "data", tmp_path)
    train = bytes(c._train)
    for row in c.train_batch(8, seed=0, epoch=0, step=0):
        assert bytes(row.tolist()) in train


def test_train_batch_rejects_negative_counters(tmp_path):
    """A negative seed or counter is a CorpusError naming it."""
    make_tree(tmp_path / "data", n_files=10)
    with pytest.raises(CorpusError, match="step"):
        corpus(tmp_path / "data", tmp_path).train_batch(2, seed=0, epoch=0, step=-1)


def test_val_batches_are_fixed_and_evenly_spaced(tmp_path):
    """val_batches gives the same evenly spaced windows every time, in batches of batch_size."""
    make_tree(tmp_path / "data")
    c = corpus(tmp_path / "data", tmp_path, val_fraction=0.3)
    batches = c.val_batches(10, 4)
    assert [b.shape[0] for b in batches] == [4, 4, 2]
    windows = torch.cat(batches)
    assert torch.equal(windows, torch.cat(c.val_batches(10, 3)))
    val = bytes(c._val)
    assert bytes(windows[0].tolist()) == val[: SEQ_LEN + CHUNK]
    assert bytes(windows[-1].tolist()) == val[-(SEQ_LEN + CHUNK) :]


def test_default_corpus_is_the_standard_library(tmp_path):
    """With no paths the corpus is the stdlib's *.py files, site-packages excluded, split by file."""
    c = ByteCorpus(seq_len=64, chunk=4, cache_dir=tmp_path)
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    expected = [
        p
        for p in stdlib.rglob("*.py")
        if not {"site-packages", "dist-packages", "__pycache__"} & set(p.relative_to(stdlib).parts)
        and not any(part.startswith(".") for part in p.relative_to(stdlib).parts)
    ]
    assert c.n_files == len(expected) > 100
    assert c.split == "file" and 0.02 < c.n_val_files / c.n_files < 0.08
    assert c.n_train_bytes + c.n_val_bytes == sum(p.stat().st_size for p in expected)


def test_a_same_size_edit_that_keeps_the_mtime_is_not_read_from_the_cache(tmp_path):
    """The cache is keyed by the bytes: an edit of the same size with the old mtime restored (cp -p,
    rsync -t, a tar or git restore) gives a corpus of the new bytes."""
    files = make_tree(tmp_path / "data", n_files=10)
    first = corpus(tmp_path / "data", tmp_path)
    stat = files[0].stat()
    files[0].write_bytes(b"N" * stat.st_size)
    os.utime(files[0], ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert files[0].stat().st_mtime_ns == stat.st_mtime_ns
    second = corpus(tmp_path / "data", tmp_path)
    assert b"N" * stat.st_size in bytes(second._train) + bytes(second._val)
    assert second.cache_path != first.cache_path


def test_a_build_from_bytes_that_no_longer_match_the_given_fingerprint_is_refused(tmp_path):
    """A corpus given the fingerprint taken before a file changed never caches the new bytes under the old key."""
    from chunklm.corpus import corpus_fingerprint

    files = make_tree(tmp_path / "data", n_files=10)
    fingerprint = corpus_fingerprint(tmp_path / "data")
    files[3].write_bytes(b"N" * files[3].stat().st_size)
    with pytest.raises(CorpusError, match="mod03.py changed while the corpus was read"):
        corpus(tmp_path / "data", tmp_path, fingerprint=fingerprint)
    assert not list((tmp_path / "cache").glob("*.u8"))
    assert corpus(tmp_path / "data", tmp_path, fingerprint=corpus_fingerprint(tmp_path / "data")).n_files == 10
