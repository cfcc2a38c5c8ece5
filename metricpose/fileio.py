"""Files written safely and inputs checked before long work: atomic writes (a reader sees the
old file or the new one, never half of one), free-space and writability checks, and one error
naming a missing input file or folder."""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from metricpose.errors import InputError


@contextmanager
def no_empty_output_on_failure(out: Path, leftovers: tuple[str, ...] = ()) -> Iterator[None]:
    """A command that fails before writing anything leaves no empty ``out`` folder behind;
    files named in ``leftovers`` (a lock) do not count as written."""
    created = not out.exists()
    try:
        yield
    except BaseException:
        if created and out.is_dir() and all(p.name in leftovers for p in out.iterdir()):
            for name in leftovers:
                (out / name).unlink(missing_ok=True)
            out.rmdir()
        raise


def check_output_folder(out: Path, needed_mb: float = 200.0, purpose: str = "training") -> None:
    """Fail before long work if the output folder cannot be written or the disk is nearly full."""
    out.mkdir(parents=True, exist_ok=True)
    probe = out / ".write-test"
    try:
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as exc:
        raise OSError(f"{out}: output folder is not writable ({exc.strerror})") from None
    check_free_space(out, needed_mb, purpose)


def check_free_space(out: Path, needed_mb: float, purpose: str) -> None:
    """Fail if the disk holding ``out`` has less than ``needed_mb`` MB free."""
    free_mb = shutil.disk_usage(out).free / 2**20
    if free_mb < needed_mb:
        raise OSError(
            f"{out}: only {free_mb:.0f} MB free; {purpose} needs about {needed_mb:.0f} MB"
        )


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file beside ``path``, fsync, then rename over it: a reader (or a
    resumed run) sees the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)  # never leave a half-written temporary behind
        if exc.errno == errno.ENOSPC:
            raise OSError(
                f"{path}: disk full while writing {len(data) / 2**20:.0f} MB; the previous "
                "version of the file, if any, is intact"
            ) from None
        raise


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete temporaries that a killed writer left in ``folder`` (``.NAME.tmp-PID``); only
    call while holding the folder (the training lock), as a live writer's would go too."""
    stale = sorted(Path(folder).glob(".*.tmp-*")) if Path(folder).is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def atomic_write_text(path: Path, text: str) -> None:
    """:func:`atomic_write_bytes` for UTF-8 text (result files: JSON, CSV, Markdown)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def require_file(path: Path, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: {what} not found")
    return path


def require_dir(path: Path, what: str) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise InputError(f"{path}: {what} not found (is --root the dataset's top folder?)")
    return path
