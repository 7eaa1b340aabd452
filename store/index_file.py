"""The on-disk format of a saved vector index, and how a save is committed.

A saved index is three files in one directory (``name`` is ``vectors`` by
default):

    vectors.json                   the header: the commit point
    vectors.<seq>.<token>.bin      hnswlib's own save_index() output
    vectors.<seq>.<token>.ids      the live labels, little-endian int64, sorted

hnswlib can only write a whole index to a path, so the data files are written
under temporary names, fsynced and renamed, and only then is the small JSON
header atomically replaced (temp file, fsync, rename, fsync the directory).
The header names the data files with their sizes and CRC-32s, so:

- a crash before the header is replaced leaves the old header, which still
  names the old data files (they are deleted only after the commit): the old
  index loads; the new data files are orphans, removed by the next save;
- a crash after it leaves the new header and the new data files: the new
  index loads;
- a truncated or bit-rotted data file fails its size or checksum, a garbled
  header fails to decode, and either raises CorruptIndex, so the caller
  rebuilds from SQLite. The checksum matters beyond tidiness: hnswlib trusts
  the neighbour lists it reads, and a corrupt one can crash the process at
  the first search.

Every data file name carries a random token, so saving twice at the same
sequence never overwrites the files the committed header points to.

CRC-32 (zlib) runs at about 2 GB/s here (blake2b 0.28, sha256 0.57, sha1 0.78
GB/s on the same 200 MB buffer): the whole file is checked at every load,
about 0.1 s at 100k vectors of dimension 384 and under a second at 1M. A
checksum, not a cryptographic hash, is the right tool: the threat is torn
writes and bad sectors, not an adversary who can already write the data dir.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import re
import secrets
import shutil
import signal
import struct
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Literal, NamedTuple, NoReturn, Protocol

import msgspec
import numpy as np
import numpy.typing as npt
from reverie.errors import CorruptIndex, StorageError, StorageFull
from reverie.store.durable import (
    checksum_and_sync,
    create_private,
    file_checksum,
    publish,
    storage_error,
    temp_path,
    write_atomic,
)

__all__ = [
    "FORK_MIN_BYTES",
    "FORMAT_VERSION",
    "MAGIC",
    "NAME_PATTERN",
    "CorruptIndex",
    "FileRef",
    "GraphFacts",
    "HnswLayout",
    "IndexHeader",
    "Saved",
    "Snapshot",
    "Writer",
    "check_header",
    "check_layout",
    "check_name",
    "data_names",
    "header_path",
    "prepare_data_file",
    "read_header",
    "read_saved",
    "remove_stale",
    "save_index",
    "start_write",
    "verified_path",
    "write_header",
]

log = logging.getLogger("reverie.store.index_file")

MAGIC = "reverie-hnsw"
FORMAT_VERSION = 1
DATA_SUFFIX = ".bin"
IDS_SUFFIX = ".ids"

# Index names are plain words, so that one index's files never match another's.
NAME_PATTERN = re.compile(r"[A-Za-z0-9_-]+")

Reason = Literal["missing", "corrupt", "mismatch", "unsupported"]


class FileRef(msgspec.Struct, frozen=True, kw_only=True):
    """One data file as the header knows it."""

    name: str
    size: int
    crc32: int


class IndexHeader(msgspec.Struct, frozen=True, kw_only=True):
    magic: str
    format: int
    model_id: str
    dim: int
    space: str
    count: int  # live vectors
    elements: int  # hnswlib slots in use, live or deleted
    seq: int  # the store's change sequence this index reflects
    m: int
    ef_construction: int
    data: FileRef
    ids: FileRef
    saved_at: float


def header_path(directory: Path, name: str) -> Path:
    return directory / f"{name}.json"


def data_names(name: str, seq: int, token: str) -> tuple[str, str]:
    base = f"{name}.{seq}.{token}"
    return base + DATA_SUFFIX, base + IDS_SUFFIX


def write_header(directory: Path, name: str, header: IndexHeader) -> None:
    """Replace the header: the commit point of a save."""
    path = header_path(directory, name)
    try:
        write_atomic(path, msgspec.json.format(msgspec.json.encode(header)) + b"\n")
    except OSError as e:
        raise storage_error(e, f"cannot write index header {path}") from e


def read_header(directory: Path, name: str) -> IndexHeader:
    path = header_path(directory, name)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise CorruptIndex(f"no saved index at {path}", reason="missing", path=path) from None
    except OSError as e:
        raise storage_error(e, f"cannot read index header {path}") from e
    try:
        header = msgspec.json.decode(raw, type=IndexHeader)
    except msgspec.DecodeError as e:
        raise CorruptIndex(f"index header {path} is garbled: {e}", path=path) from e
    if header.magic != MAGIC:
        raise CorruptIndex(f"{path} is not a reverie index header", path=path)
    if header.format > FORMAT_VERSION:
        raise CorruptIndex(
            f"index {path} has format {header.format}; this reverie reads up to {FORMAT_VERSION}",
            reason="unsupported",
            path=path,
        )
    for ref in (header.data, header.ids):
        # A header names files in its own directory, never a path elsewhere.
        if Path(ref.name).name != ref.name or ref.name.startswith("."):
            raise CorruptIndex(f"index header {path} names {ref.name!r}", path=path)
    return header


def check_header(header: IndexHeader, path: Path, model_id: str, dim: int) -> None:
    """Refuse an index built for another model or dimension."""
    if header.model_id != model_id or header.dim != dim:
        raise CorruptIndex(
            f"index {path} holds {header.model_id!r} vectors of dimension {header.dim}; "
            f"expected {model_id!r} of dimension {dim}",
            reason="mismatch",
            path=path,
        )
    if header.space != "cosine":
        raise CorruptIndex(f"index {path} uses space {header.space!r}", path=path)


# The start of hnswlib's saveIndex() output (hnswalg.h, format unchanged since 0.5):
# offsetLevel0, max_elements, cur_element_count, size_data_per_element,
# label_offset, offsetData, maxlevel, enterpoint_node, maxM, maxM0, M, mult,
# ef_construction.
_HNSW_HEAD = struct.Struct("<QQQQQQiIQQQdQ")


class HnswLayout(msgspec.Struct, frozen=True):
    elements: int
    vector_bytes: int
    m: int


def check_layout(path: Path, header: IndexHeader) -> None:
    """Check that hnswlib's own header agrees with ours before hnswlib trusts it.

    hnswlib takes the dimension from the caller, not the file, and would read
    a file of another dimension as garbage; our header could in principle lie
    while the data checksum still matches.
    """
    try:
        with path.open("rb") as f:
            raw = f.read(_HNSW_HEAD.size)
    except OSError as e:
        raise storage_error(e, f"cannot read index data file {path}") from e
    if len(raw) < _HNSW_HEAD.size:
        raise CorruptIndex(f"index data file {path} is too short", path=path)
    fields = _HNSW_HEAD.unpack(raw)
    layout = HnswLayout(elements=fields[2], vector_bytes=fields[4] - fields[5], m=fields[10])
    expected = HnswLayout(elements=header.elements, vector_bytes=4 * header.dim, m=header.m)
    if layout != expected:
        raise CorruptIndex(
            f"index data file {path} is {layout}, the header says {expected}", path=path
        )


def verified_path(directory: Path, ref: FileRef) -> Path:
    """The path of a data file whose size and checksum match the header's."""
    path = directory / ref.name
    try:
        size, crc = file_checksum(path)
    except FileNotFoundError:
        raise CorruptIndex(f"index data file {path} is missing", path=path) from None
    except OSError as e:
        raise storage_error(e, f"cannot read index data file {path}") from e
    if size != ref.size:
        raise CorruptIndex(
            f"index data file {path} has {size} bytes, the header says {ref.size} (truncated?)",
            reason="corrupt",
            path=path,
        )
    if crc != ref.crc32:
        raise CorruptIndex(f"index data file {path} fails its checksum", path=path)
    return path


def remove_stale(directory: Path, name: str, keep: set[str]) -> None:
    """Delete this index's data and temporary files that `keep` does not name.

    Runs only after a header commit (or after a save failed before its
    commit), so what it removes is either superseded or was never committed.
    """
    n = re.escape(name)
    ours = re.compile(
        rf"{n}\.\d+\.[0-9a-f]+\.(bin|ids)"  # data files
        rf"|\.{n}\.(\d+\.[0-9a-f]+\.(bin|ids)|json)\.[0-9a-f]+\.tmp"  # their temporaries
    )
    try:
        names = os.listdir(directory)
    except OSError:
        return  # best effort: the next save tries again
    for entry in names:
        if entry not in keep and ours.fullmatch(entry):
            with contextlib.suppress(OSError):
                os.unlink(directory / entry)


def remove_index(directory: Path, name: str) -> None:
    """Delete a named index: its header first (the commit point), then its files."""
    with contextlib.suppress(OSError):
        os.unlink(header_path(directory, name))
    remove_stale(directory, name, keep=set())


def saved_names(directory: Path, prefix: str) -> set[str]:
    """Names of the indexes with a header in `directory` whose name starts with `prefix`."""
    try:
        entries = os.listdir(directory)
    except OSError:
        return set()
    return {e[: -len(".json")] for e in entries if e.startswith(prefix) and e.endswith(".json")}


# -- saving and loading a whole index --------------------------------------

Ids = npt.NDArray[np.int64]


class GraphFacts(NamedTuple):
    """What the header records about the graph itself."""

    model_id: str
    dim: int
    m: int
    ef_construction: int


class Snapshot(NamedTuple):
    """What a save captured while it held the index's locks."""

    ids: Ids  # the live labels, in any order
    elements: int  # hnswlib slots in use
    size: int  # the size hnswlib's file must have


# dump(directory, data_tmp) writes hnswlib's file to data_tmp under the
# index's locks, calling prepare_data_file first.
Dump = Callable[[Path, Path], Snapshot]


class Saved(NamedTuple):
    """A committed save, checked and ready to hand to hnswlib."""

    header: IndexHeader
    path: Path  # the header's
    data: Path  # hnswlib's file, size and checksum verified
    ids: Ids


def check_name(name: str) -> None:
    if not NAME_PATTERN.fullmatch(name):
        raise ValueError(f"index name must be letters, digits, '-' or '_', not {name!r}")


def save_index(directory: Path, name: str, seq: int, facts: GraphFacts, dump: Dump) -> IndexHeader:
    """Write the data files, then commit them with the header (see the module docstring).

    The caller serialises saves of one index: header commits must never interleave.
    """
    check_name(name)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise storage_error(e, f"cannot create index directory {directory}") from e
    data_name, ids_name = data_names(name, seq, secrets.token_hex(4))
    data_tmp, ids_tmp = temp_path(directory / data_name), temp_path(directory / ids_name)
    try:
        snap = dump(directory, data_tmp)
        data = _sync_data(directory, data_tmp, data_name, snap.size)
        ids_ref = _write_ids(ids_tmp, ids_name, snap.ids)
        header = _header(facts, seq, snap, data, ids_ref)
        publish(data_tmp, directory / data_name)
        publish(ids_tmp, directory / ids_name)
        write_header(directory, name, header)
    except BaseException as e:
        remove_stale(directory, name, _committed(directory, name))
        if isinstance(e, OSError):
            raise storage_error(e, f"cannot save the vector index in {directory}") from e
        raise
    remove_stale(directory, name, {data_name, ids_name})
    return header


def prepare_data_file(directory: Path, path: Path, needed: int) -> None:
    """Refuse a save that cannot fit, then create hnswlib's (empty) target file."""
    _check_space(directory, needed)
    create_private(path)  # a real errno if the directory is not writable


def read_saved(directory: Path, name: str, model_id: str, dim: int) -> Saved:
    """The last committed save, verified; raise CorruptIndex if it cannot be used as is."""
    check_name(name)
    hpath = header_path(directory, name)
    header = read_header(directory, name)
    check_header(header, hpath, model_id, dim)
    data_path = verified_path(directory, header.data)
    ids_path = verified_path(directory, header.ids)
    check_layout(data_path, header)
    ids = np.fromfile(ids_path, dtype="<i8")
    if len(ids) != header.count:
        raise CorruptIndex(f"index {hpath}: ids file disagrees", path=hpath)
    return Saved(header=header, path=hpath, data=data_path, ids=ids)


def _header(
    facts: GraphFacts, seq: int, snap: Snapshot, data: FileRef, ids: FileRef
) -> IndexHeader:
    return IndexHeader(
        magic=MAGIC,
        format=FORMAT_VERSION,
        model_id=facts.model_id,
        dim=facts.dim,
        space="cosine",
        count=len(snap.ids),
        elements=snap.elements,
        seq=seq,
        m=facts.m,
        ef_construction=facts.ef_construction,
        data=data,
        ids=ids,
        saved_at=time.time(),
    )


def _sync_data(directory: Path, path: Path, name: str, expected: int) -> FileRef:
    size, crc = checksum_and_sync(path)
    if size != expected:
        # hnswlib's writer does not report errors: a short file is a failed write.
        _check_space(directory, expected)
        raise StorageError(f"index data file {path} was written short ({size} of {expected})")
    return FileRef(name=name, size=size, crc32=crc)


def _write_ids(path: Path, name: str, ids: Ids) -> FileRef:
    ids.sort()
    create_private(path)
    with path.open("r+b") as f:
        f.write(ids.astype("<i8").tobytes())
    size, crc = checksum_and_sync(path)
    return FileRef(name=name, size=size, crc32=crc)


def _check_space(directory: Path, needed: int) -> None:
    free = shutil.disk_usage(directory).free
    if free < needed:
        raise StorageFull(
            f"saving the vector index needs {needed} bytes in {directory}, {free} are free"
        )


def _committed(directory: Path, name: str) -> set[str]:
    """The data files the current header names (to keep when cleaning up a failed save)."""
    try:
        header = read_header(directory, name)
    except (CorruptIndex, StorageError):
        return set()
    return {header.data.name, header.ids.name}


# -- writing hnswlib's file from a forked child --------------------------------
#
# hnswlib 0.8's save_index() holds the GIL for its whole write (0.48 s at
# 100k vectors, 4.6 s at 1M): the event loop, the SQLite writer thread and
# every search wait. So the file is written by a forked child instead: the
# caller forks while it holds the index's read lock (no insertion in progress,
# the graph's memory consistent), releases the lock as soon as fork returns
# (copy-on-write keeps the child's snapshot), and waits for the child with the
# GIL released. The rest of the save (checksum, fsync, rename, header) is the
# parent's, exactly as for an in-process write, so the format and the crash
# safety do not change.
#
# Why the child is safe although the daemon has threads (only the forking
# thread exists in the child, and any lock another thread held at fork stays
# held there forever):
# - glibc's fork() takes malloc's arena locks and stdio's list lock around
#   the fork and resets them in the child, so allocating and fopen() (which
#   libstdc++'s ofstream uses) work there.
# - hnswlib's HierarchicalNSW::saveIndex (hnswalg.h) takes no lock at all: it
#   opens an ofstream, writes the header fields, data_level0_memory_ and each
#   element's link list, and closes the file; the binding's saveIndex calls it
#   directly. The label and link-list mutexes it leaves alone are the ones an
#   insertion would hold, and the read lock excludes insertions at fork time.
# - The child runs only CPython's own after-fork code, save_index and
#   os._exit: no Python cleanup, no atexit, no flush of inherited buffers, no
#   socket or SQLite call. The garbage collector is off across the fork, so no
#   finalizer (an APSW connection's, say) can run in the child, and the
#   other threads' frames are not cleared there (checked on CPython 3.11: an
#   object only another thread's frame holds is not finalized). The signals
#   that would reach the daemon's handlers (and trio's wakeup socket, shared
#   with the parent) get their default action back first.
# - A child that hangs anyway (a lock we did not foresee) is killed after
#   WRITE_TIMEOUT_S plus a generous time per byte, and the save fails like a
#   failed write: the previous save stays, the next interval retries.
#
# Cost, measured at 100k vectors (tests/bench/bench_save_stall.py, a busy
# 2-core machine): fork() holds the GIL while the kernel copies the page
# tables, 2-5 ms for a process of 226 MiB (up to 15 ms when the cores are
# busy); the longest gap a thread ticking every 1 ms sees during a save falls
# from 54-570 ms (in process) to 6-15 ms. Memory: pages the parent writes
# while the child lives are copied, which is little, since nothing inserts
# into the index meanwhile (the indexer's own thread is the one waiting) and
# searches only read the graph. An index smaller than
# FORK_MIN_BYTES is written in process: writing it costs less than forking.

# The child's CPU priority: it holds nothing the daemon's threads wait for
# (the index's locks are released once fork returns), so the daemon's requests
# come first and the save takes longer under load.
CHILD_NICENESS = 19
FORK_MIN_BYTES = 4 << 20  # about where writing costs the stall of a fork (5-10 ms)
WRITE_TIMEOUT_S = 120.0
WRITE_BYTES_PER_S = 20e6  # a floor far below any disk's: only a hung child gets killed

# CPython 3.12+ warns on fork() in a process with threads; the child above is
# built for exactly that, so the warning would only be noise in the log.
warnings.filterwarnings(
    "ignore", message=r".*use of fork\(\) may lead to deadlocks", category=DeprecationWarning
)


class _Hnsw(Protocol):
    def save_index(self, path: str) -> None: ...


class Writer(NamedTuple):
    """A child writing hnswlib's file; `wait` for it after releasing the locks."""

    pid: int
    path: Path
    size: int

    def wait(self) -> None:
        """Return when the child has written the file; StorageError if it failed."""
        deadline = time.monotonic() + WRITE_TIMEOUT_S + self.size / WRITE_BYTES_PER_S
        pause = 0.001
        while True:
            pid, status = os.waitpid(self.pid, os.WNOHANG)  # the GIL is free while we sleep
            if pid:
                break
            if time.monotonic() > deadline:
                with contextlib.suppress(OSError):
                    os.kill(self.pid, signal.SIGKILL)
                _, status = os.waitpid(self.pid, 0)
                raise StorageError(f"writing {self.path} took too long; the writer was killed")
            time.sleep(pause)
            pause = min(pause * 2, 0.02)
        code = os.waitstatus_to_exitcode(status)  # negative: killed by that signal
        if code != 0:
            raise StorageError(f"the process writing {self.path} failed (status {code})")


_fork_failed = False


def start_write(index: _Hnsw, path: Path, size: int) -> Writer | None:
    """Fork a child that writes `index` to `path`; None if fork is refused (say so once).

    Call it holding the index's read lock; release the lock, then `wait`.
    """
    global _fork_failed
    enabled = gc.isenabled()
    gc.disable()  # no finalizer may run in the child; it stays off there
    try:
        pid = os.fork()
    except OSError as e:  # ENOMEM, EAGAIN, a seccomp filter's EPERM
        if enabled:
            gc.enable()
        if not _fork_failed:
            _fork_failed = True
            log.warning("cannot fork to save the vector index (%s): saving in process", e)
        return None
    if pid == 0:
        _child(index, str(path))  # never returns
    if enabled:
        gc.enable()
    return Writer(pid=pid, path=path, size=size)


def _child(index: _Hnsw, path: str) -> NoReturn:
    code = 1
    try:
        with contextlib.suppress(ValueError, OSError):
            signal.set_wakeup_fd(-1)  # never write to the parent's wakeup socket
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                signal.signal(sig, signal.SIG_DFL)
        with contextlib.suppress(OSError):
            os.nice(CHILD_NICENESS)  # the daemon's threads first (see CHILD_NICENESS)
        index.save_index(path)
        code = 0
    finally:
        os._exit(code)
