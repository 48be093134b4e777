"""Private: a run folder that only its own `GradWatch` writes.

- Ownership: a run folder says it is one (`run.json`'s `"writer"`).
  `GradWatch` refuses, before any step, a folder that holds files it did not
  write, naming them (`check_ownership`).
- A lock (`FolderLock`): one writer at a time. The lock file
  `.gradwatch.lock` holds the writer's pid; the lock itself is an
  `fcntl.flock` on it, which the system releases when the process ends (a
  crash, `kill -9`): a stale lock is no lock. Without `fcntl` (Windows) the
  file is created exclusively, and a file left by a process that is gone is
  taken over. Within one process, a new writer takes the folder over from
  an older one (a notebook cell run again after a failed `fit` leaves the
  old callback alive): the older one stops writing, with a warning.
- Repair forward (`cut_partial_line`): a last line cut short by a crash or
  a full disk is moved aside (`<file>.partial`) before anything is
  appended, so that no record is glued onto it.
"""

import contextlib
import json
import os
import re
import weakref

from keras_gradwatch.core.errors import RunDirectoryError
from keras_gradwatch.core.errors import RunLockedError
from keras_gradwatch.runs import plots
from keras_gradwatch.runs import records
from keras_gradwatch.runs import report

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

LOCK = ".gradwatch.lock"
# What GradWatch writes into a run folder (besides `LOCK`).
RECORDS = (records.RUN, records.STEPS, records.MEASUREMENTS, records.ALERTS,
           records.SUMMARY, records.MODELS)
DRAWN = (plots.DECAY, plots.HEATMAP, plots.NORMS, plots.UPDATES, report.REPORT)
FOLDERS = (records.PROFILES, "models")
# Temporary files, what repair set aside, TensorBoard's event files.
_OWN_PATTERN = re.compile(
    r"^(\..+\.tmp|.+\.partial|.+\.damaged(\.\d+)?|events\.out\.tfevents\..+)$"
)
_SHOWN = 5  # foreign files named in the message


class ProcessLocks:
    """The folder locks this process holds, by the folder's real path.

    Genuinely process-wide, and kept as small as it can be: the lock file
    alone cannot do this. An `flock` belongs to an open file description,
    so a second writer in this process is refused exactly as another
    process's would be; taking the folder over (a notebook cell run again
    after a failed `fit` leaves the old callback alive) means releasing the
    older writer's descriptor and telling it it was superseded, and only a
    reference to that writer reaches them safely (a descriptor number
    written into the lock file could, by the time it is read, name another
    file). The map holds weak references: a writer that is gone is not
    in it.
    """

    def __init__(self):
        self._by_path = weakref.WeakValueDictionary()

    def take_over(self, key, lock):
        """Supersedes the older holder of the folder `key` in this process,
        if any (it stops writing: `FolderLock.superseded`)."""
        older = self._by_path.get(key)
        if older is not None and older is not lock and older.held:
            older.release()
            older.superseded = True

    def hold(self, key, lock):
        """`lock` is this process's writer of the folder `key`."""
        self._by_path[key] = lock


PROCESS_LOCKS = ProcessLocks()


def check_ownership(path):
    """Raises unless `path` is missing, empty of anything but GradWatch's
    own scaffolding, or a GradWatch run folder.

    A folder is a run when its `run.json` says so (`"writer"`), or, for
    runs written before that field, when `run.json` has the fields only
    GradWatch writes (`"format"` and `"fits"`).

    Raises:
        RunDirectoryError: Naming the files GradWatch did not write.
    """
    if not path.is_dir():
        return
    entries = sorted(os.listdir(path))
    run = path / records.RUN
    if os.path.lexists(run):
        if _is_run(run):
            return
        if _readable_json(run):  # another tool's run.json, and what goes with it
            foreign = [e for e in entries if not _own(path, e, with_records=False)]
        else:  # GradWatch's, damaged? Only with nothing foreign beside it.
            foreign = [e for e in entries if not _own(path, e, with_records=True)]
    else:
        foreign = [e for e in entries if not _own(path, e, with_records=False)]
    if foreign:
        named = ", ".join(foreign[:_SHOWN]) + (
            f", ... ({len(foreign)} in all)" if len(foreign) > _SHOWN else "")
        raise RunDirectoryError(
            f"GradWatch will not write into '{path}': it holds files GradWatch "
            f"did not write ({named}), and writing there could overwrite or mix "
            "with them. Pass a new or empty folder, e.g. "
            f"GradWatch('{path / 'gradwatch'}')."
        )


def _is_run(run):
    try:
        settings = json.loads(run.read_bytes())
    except (OSError, ValueError):
        return False
    if not isinstance(settings, dict):
        return False
    if settings.get("writer") == records.WRITER:
        return True
    return isinstance(settings.get("format"), int) and isinstance(settings.get("fits"), list)


def _readable_json(path):
    try:
        json.loads(path.read_bytes())
    except (OSError, ValueError):
        return False
    return True


def _own(path, entry, with_records):
    """Whether `entry` of a run folder is a name GradWatch writes (its
    records only with `records`: in a folder without `run.json` they are
    another tool's)."""
    full = path / entry
    if entry == LOCK or _OWN_PATTERN.match(entry):
        return True
    if entry in FOLDERS and full.is_dir() and not full.is_symlink():
        return with_records or not any(full.iterdir())
    return with_records and (entry in RECORDS or entry in DRAWN)


class FolderLock:
    """The exclusive lock of one run folder, held by one writer.

    Args:
        path: The run folder (it exists).
    """

    def __init__(self, path):
        self.path = path
        self._box = [None]  # the lock's descriptor (or file, without flock)
        self.superseded = False  # a newer writer in this process took the folder
        # A writer dropped without closing (a failed fit) frees the folder.
        weakref.finalize(self, _close_box, self._box)

    @property
    def _handle(self):
        return self._box[0]

    @_handle.setter
    def _handle(self, value):
        self._box[0] = value

    @property
    def held(self):
        return self._handle is not None

    def acquire(self):
        """Takes the lock, or raises `RunLockedError` naming its holder."""
        if self._handle is not None:
            return
        self.superseded = False
        key = records.folder_key(self.path)
        PROCESS_LOCKS.take_over(key, self)
        self._take()
        PROCESS_LOCKS.hold(key, self)

    def _take(self):
        lock = self.path / LOCK
        if fcntl is None:
            self._handle = _exclusive_file(lock)
            return
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
        try:
            descriptor = os.open(lock, flags, 0o644)
        except OSError as error:
            raise RunDirectoryError(
                f"Cannot create the lock file '{lock}' ({error.strerror or error}). "
                "Pass a folder you can write to."
            ) from error
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            holder = _read_pid(descriptor)
            os.close(descriptor)
            raise _locked(self.path, holder) from error
        os.ftruncate(descriptor, 0)
        os.write(descriptor, f"{os.getpid()}\n".encode())
        self._handle = descriptor

    def release(self):
        """Gives the lock up (the lock file stays: removing it could let a
        third writer in beside one that opened it already)."""
        if self._handle is None:
            return
        handle, self._handle = self._handle, None
        if fcntl is None:
            with contextlib.suppress(OSError):
                os.unlink(handle)
            return
        with contextlib.suppress(OSError):
            os.ftruncate(handle, 0)
        os.close(handle)  # releases the flock


def _close_box(box):
    """Closes a lock left held by a writer that was never closed."""
    handle, box[0] = box[0], None
    if isinstance(handle, int):
        with contextlib.suppress(OSError):
            os.close(handle)


def _read_pid(descriptor):
    try:
        text = os.pread(descriptor, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _locked(path, pid):
    holder = f"process {pid}" if pid else "another process"
    same = " (this process: another GradWatch on the same folder)" if pid == os.getpid() else ""
    return RunLockedError(
        f"The run folder '{path}' is being written by {holder}{same}: two "
        "writers would mix their records. Give this GradWatch another log_dir "
        f"(e.g. '{path}-2'), or wait until that training ends."
    )


def _exclusive_file(lock):
    """Without flock: the lock file created exclusively (a stale one, of a
    process that is gone, taken over). Returns its path."""
    for _ in range(2):
        try:
            descriptor = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            try:
                text = lock.read_text().strip()
            except OSError:
                text = ""
            pid = int(text) if text.isdigit() else None
            if pid is not None and _alive(pid):
                raise _locked(lock.parent, pid) from None
            with contextlib.suppress(OSError):
                os.unlink(lock)  # stale: its process is gone
            continue
        os.write(descriptor, f"{os.getpid()}\n".encode())
        os.close(descriptor)
        return lock
    raise _locked(lock.parent, None)


def _alive(pid):
    if pid == os.getpid():
        return True
    if os.name != "posix":
        return True  # no cheap check: assume it lives (the message names the file)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def cut_partial_line(path):
    """Moves a last line cut short (no newline) of a JSON Lines file to
    `<file>.partial`, so that the next record starts on a line of its own.

    A last line that is a whole record without its newline gets the
    newline instead.

    Returns:
        The number of bytes set aside (0 if none).
    """
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return 0
    if not size:
        return 0
    with open(path, "rb+") as f:
        f.seek(max(0, size - 65536))
        tail = f.read()
        if tail.endswith(b"\n"):
            return 0
        cut = tail.rfind(b"\n")
        if cut < 0 and size > len(tail):
            # A last line longer than 64 KiB: find its start.
            return _cut_long_line(f, size, path)
        start = size - len(tail) + cut + 1
        partial = tail[cut + 1:]
        if _whole_record(partial):
            f.seek(size)
            f.write(b"\n")
            return 0
        with open(path.with_name(path.name + ".partial"), "ab") as aside:
            aside.write(partial + b"\n")
        f.truncate(start)
    return len(partial)


def _cut_long_line(f, size, path):
    f.seek(0)
    start = 0
    for line in f:
        if line.endswith(b"\n"):
            start += len(line)
    f.seek(start)
    partial = f.read()
    with open(path.with_name(path.name + ".partial"), "ab") as aside:
        aside.write(partial + b"\n")
    f.truncate(start)
    return size - start


def _whole_record(line):
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def set_aside(path):
    """Renames a damaged file to `<name>.damaged` (`.damaged.1`, ... if
    taken), so that writing a new one overwrites nothing. Returns the new
    path."""
    for k in range(1000):
        target = path.with_name(path.name + ".damaged" + (f".{k}" if k else ""))
        if not os.path.lexists(target):
            os.replace(path, target)
            return target
    raise RunDirectoryError(f"Too many damaged copies of '{path}'.")
