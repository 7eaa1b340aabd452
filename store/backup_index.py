"""The saved vector index beside a backup: ``FILE.index/``, when it can be trusted.

Rebuilding the HNSW index of 100k memories from SQLite takes minutes, during
which searches are lexical only; copying it takes seconds. So a backup also
copies the index's last committed save(s), on one condition: the save's
sequence is at most the snapshot's. Such a save reflects an earlier state of
that same database, and the daemon catches it up from its sequence at start,
exactly as after a crash. A save taken after the snapshot (it may hold
memories the snapshot lacks) is not copied, and restore rebuilds instead.

Saves are copied without stopping the indexer: each data file is checked
against the size and CRC-32 its header records (a concurrent save may
replace and delete them mid-copy; then the copy is tried again). A small
``backup.json`` ties the copy to its database file (change sequence, memory
count, size), so that restore never pairs a database with another backup's
index. Restore verifies every file again before installing it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

import msgspec
from reverie.errors import CorruptIndex
from reverie.store.durable import file_checksum, fsync_dir, fsync_file
from reverie.store.index_file import FileRef, IndexHeader, header_path, read_header
from reverie.store.vector_index import DEFAULT_NAME

SUFFIX = ".index"
BINDING = "backup.json"
ATTEMPTS = 3


class Binding(msgspec.Struct, kw_only=True):
    """Which database file this index copy belongs to."""

    index_seq: int
    db_seq: int
    db_memories: int
    db_bytes: int


def index_dir_for(backup: Path) -> Path:
    return backup.with_name(backup.name + SUFFIX)


def _names(directory: Path) -> list[str]:
    scoped = sorted(p.stem for p in directory.glob("ws-*.json"))
    return [DEFAULT_NAME, *scoped]


def _copy_ref(src_dir: Path, dst_dir: Path, ref: FileRef) -> None:
    dst = dst_dir / ref.name
    shutil.copyfile(src_dir / ref.name, dst)
    if file_checksum(dst) != (ref.size, ref.crc32):
        raise CorruptIndex(f"{ref.name} changed while it was copied", path=dst)
    fsync_file(dst)


def _copy_once(index_dir: Path, tmp: Path, max_seq: int) -> int | None:
    main = read_header(index_dir, DEFAULT_NAME)
    if main.seq > max_seq:
        return None  # saved after the snapshot: not this database's past
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(mode=0o700)
    for name in _names(index_dir):
        try:
            header = main if name == DEFAULT_NAME else read_header(index_dir, name)
        except CorruptIndex:
            continue  # a workspace index is rebuilt when missing
        if header.seq != main.seq:
            continue  # the daemon loads workspace indexes only at the main one's seq
        _copy_ref(index_dir, tmp, header.data)
        _copy_ref(index_dir, tmp, header.ids)
        hp = header_path(tmp, name)
        hp.write_bytes(msgspec.json.format(msgspec.json.encode(header)) + b"\n")
        fsync_file(hp)
    return main.seq


def copy_index(index_dir: Path, backup: Path, binding: Binding) -> int | None:
    """Copy the saved index beside `backup`; its sequence, or None if none was copied.

    Call before `backup` itself is published: a published FILE then always
    has its complete FILE.index (or none).
    """
    dest = index_dir_for(backup)
    tmp = dest.with_name(dest.name + ".tmp")
    for _ in range(ATTEMPTS):
        try:
            seq = _copy_once(index_dir, tmp, binding.db_seq)
        except (CorruptIndex, FileNotFoundError):
            continue  # a save replaced the files under us: read the new header
        if seq is None:
            break
        b = msgspec.structs.replace(binding, index_seq=seq)
        (tmp / BINDING).write_bytes(msgspec.json.encode(b))
        fsync_file(tmp / BINDING)
        fsync_dir(tmp)
        shutil.rmtree(dest, ignore_errors=True)
        os.replace(tmp, dest)
        return seq
    shutil.rmtree(tmp, ignore_errors=True)
    return None


def remove_index(backup: Path) -> None:
    """Remove FILE.index (an older backup's) before FILE is replaced."""
    shutil.rmtree(index_dir_for(backup), ignore_errors=True)
    shutil.rmtree(index_dir_for(backup).with_name(index_dir_for(backup).name + ".tmp"), True)


def stage_restore(backup: Path, staging: Path, *, db_seq: int, db_memories: int) -> bool:
    """Copy and verify FILE.index into `staging`; False if there is none or it does not fit."""
    src = index_dir_for(backup)
    if not src.is_dir():
        return False
    try:
        b = msgspec.json.decode((src / BINDING).read_bytes(), type=Binding)
    except (OSError, msgspec.DecodeError, msgspec.ValidationError):
        return False
    if (b.db_seq, b.db_memories, b.db_bytes) != (db_seq, db_memories, backup.stat().st_size):
        return False  # another backup's index
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(mode=0o700)
    try:
        for name in _names(src):
            header: IndexHeader = read_header(src, name)
            if header.seq != b.index_seq or header.seq > db_seq:
                raise CorruptIndex(f"{name}: sequence {header.seq} does not fit", path=src)
            _copy_ref(src, staging, header.data)
            _copy_ref(src, staging, header.ids)
            shutil.copyfile(header_path(src, name), header_path(staging, name))
        fsync_dir(staging)
    except (CorruptIndex, OSError):
        with contextlib.suppress(OSError):
            shutil.rmtree(staging)
        return False
    return True
