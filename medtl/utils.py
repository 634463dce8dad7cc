"""Small helpers shared across medtl."""

from __future__ import annotations

import contextlib
import difflib
import errno
import hashlib
import hmac
import logging
import os
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, BinaryIO

from medtl.errors import ConfigError, MedtlError, UnknownOptionError

__all__ = [
    "look_up_option",
    "hash_patient_id",
    "patient_id_secret",
    "atomic_write_bytes",
    "atomic_write",
    "interrupts_deferred",
    "interrupt",
    "is_rank_zero_env",
    "medtl_home",
    "is_weights_file",
    "WEIGHT_FILE_SUFFIXES",
]


def look_up_option(value: str, allowed: Iterable[str], *, what: str = "option") -> str:
    """Return ``value`` if allowed, else raise an error listing the allowed values and the closest match."""
    allowed = list(allowed)
    if value in allowed:
        return value
    close = difflib.get_close_matches(str(value), allowed, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise UnknownOptionError(f"unknown {what} {value!r}; allowed: {', '.join(map(str, allowed))}.{hint}")


WEIGHT_FILE_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin", ".safetensors", ".tar")


def is_weights_file(value: str | os.PathLike[str]) -> bool:
    """Whether a ``model.weights`` value names a file (or a run folder) rather than a weight source.

    The one answer used everywhere (config paths resolved against the config's folder, run names, the weights
    loader): a path object, or a string holding a path separator or ending in a weight-file suffix
    (:data:`WEIGHT_FILE_SUFFIXES`). Source names (``imagenet``, ``local:xray-simclr``) have neither; a file without
    a suffix in the current folder is written ``./name``.
    """
    if isinstance(value, os.PathLike):
        return True
    text = str(value)
    return "/" in text or os.sep in text or text.lower().endswith(WEIGHT_FILE_SUFFIXES)


ID_SECRET_ENV = "MEDTL_ID_SECRET"
ID_SECRET_FILE_ENV = "MEDTL_ID_SECRET_FILE"
ID_SECRET_NAME = "id-secret"
_secret_cache: dict[tuple[str, str], bytes] = {}
_secret_lock = threading.Lock()
_pseudonyms: dict[tuple[bytes, str], str] = {}


def _read_secret_file(path: Path, source: str) -> bytes:
    try:
        data = path.read_bytes().strip()
    except OSError as exc:
        raise ConfigError(
            f"cannot read the pseudonym secret {path} ({exc.strerror or exc})",
            path=str(path),
            fix=f"check {source}, or set {ID_SECRET_ENV} to the study's secret",
        ) from None
    try:
        mode = path.stat().st_mode & 0o777
    except OSError:
        mode = 0
    if mode & 0o077:
        logging.getLogger("medtl").warning(
            "the pseudonym secret %s can be read by other users (mode %o); run `chmod 600 %s`", path, mode, path
        )
    if len(data) < 16:
        raise ConfigError(
            f"the pseudonym secret {path} holds {len(data)} byte(s); at least 16 are needed",
            path=str(path),
            fix="write a long random value into it, e.g. `python -c 'import secrets; print(secrets.token_hex(32))'`",
        )
    return data


def _create_secret(path: Path) -> bytes:
    """Create ``path`` (mode 0600) with a random secret, atomically: a concurrent creator's file wins."""
    import secrets

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, (secrets.token_hex(32) + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)  # fails if another process created it first; its secret is then the one
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
    except OSError as exc:
        raise ConfigError(
            f"cannot create the pseudonym secret {path} ({exc.strerror or exc})",
            path=str(path),
            fix=f"make MEDTL_HOME writable, or give the secret with {ID_SECRET_ENV} or {ID_SECRET_FILE_ENV}",
        ) from None
    return _read_secret_file(path, "MEDTL_HOME")


def patient_id_secret() -> bytes:
    """The key of :func:`hash_patient_id`.

    In order: ``$MEDTL_ID_SECRET`` (the secret itself), ``$MEDTL_ID_SECRET_FILE`` (a file holding it), else
    ``$MEDTL_HOME/id-secret``, created with 32 random bytes and mode 0600 on first use. Every machine of one
    study must use the same secret, or the same patient gets different pseudonyms (and lands in different
    splits): copy the file to each machine's MEDTL_HOME, point ``MEDTL_ID_SECRET_FILE`` at one shared copy, or
    set ``MEDTL_ID_SECRET`` in the job environment.

    Raises:
        ConfigError: the secret file cannot be read or created, or is shorter than 16 bytes.
    """
    env = os.environ.get(ID_SECRET_ENV, "")
    if env:
        if len(env.strip()) < 16:
            raise ConfigError(
                f"{ID_SECRET_ENV} holds {len(env.strip())} character(s); at least 16 are needed",
                fix="set it to a long random value, e.g. the output of `python -c 'import secrets; "
                "print(secrets.token_hex(32))'`",
            )
        return env.strip().encode()
    file_env = os.environ.get(ID_SECRET_FILE_ENV, "")
    # keyed by the environment as it is now, so that a changed MEDTL_HOME finds its own secret
    key = ("file", file_env) if file_env else ("home", os.environ.get("MEDTL_HOME", ""))
    cached = _secret_cache.get(key)
    if cached is not None:
        return cached
    with _secret_lock:  # header scans hash in threads: one of them creates the file, the others read it
        cached = _secret_cache.get(key)
        if cached is not None:
            return cached
        if file_env:
            secret = _read_secret_file(Path(file_env).expanduser(), ID_SECRET_FILE_ENV)
        else:
            path = medtl_home() / ID_SECRET_NAME
            secret = _read_secret_file(path, "MEDTL_HOME") if path.exists() else _create_secret(path)
        _secret_cache[key] = secret
    return secret


def hash_patient_id(patient_id: str | None) -> str:
    """Keyed pseudonym for a PatientID: HMAC-SHA256 under the installation's secret, 16 hex digits.

    The same ID gives the same pseudonym wherever the secret is the same (see :func:`patient_id_secret`);
    without the secret, pseudonyms cannot be reversed by trying candidate IDs. Raw patient identity never
    appears in logs, reports, manifests written by medtl, caches or run directories.
    """
    if patient_id is None or str(patient_id).strip() == "":
        return ""
    secret = patient_id_secret()
    text = str(patient_id).strip()
    key = (secret, text)
    found = _pseudonyms.get(key)
    if found is None:
        found = hmac.new(secret, text.encode(), hashlib.sha256).hexdigest()[:16]
        if len(_pseudonyms) > 100_000:  # a cohort's worth; indexing hashes the same few IDs thousands of times
            _pseudonyms.clear()
        _pseudonyms[key] = found
    return found


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half of it.

    Raises:
        MedtlError: the file cannot be written (a folder in its place, a read-only or full disk); the temporary
            file is removed and the old file, if any, is left as it was.
    """
    atomic_write(path, lambda fh: fh.write(data))


_critical = threading.local()


@contextlib.contextmanager
def interrupts_deferred() -> Any:
    """A section that a stop request must not cut in half (a file being written): a signal that :func:`interrupt`
    answers during it (medtl's SIGTERM and SIGINT handlers) is raised as :class:`KeyboardInterrupt` when the section
    ends, not inside it. A second request while one waits is raised at once: two Ctrl-C stop a write that hangs."""
    depth = getattr(_critical, "depth", 0)
    _critical.depth = depth + 1
    try:
        yield
    finally:
        _critical.depth = depth
        pending = getattr(_critical, "pending", None) if depth == 0 else None
        if pending is not None:
            _critical.pending = None
            raise KeyboardInterrupt(pending)


def interrupt(message: str) -> None:
    """Stop as Ctrl-C does (:class:`KeyboardInterrupt` with ``message``), now, or at the end of the section of
    :func:`interrupts_deferred` this thread is in. Called by signal handlers, which Python runs in the main thread."""
    if getattr(_critical, "depth", 0) and getattr(_critical, "pending", None) is None:
        _critical.pending = message
        return
    _critical.pending = None
    raise KeyboardInterrupt(message)


def atomic_write(path: str | os.PathLike[str], write: Callable[[BinaryIO], Any]) -> None:
    """``write(fh)`` into a temporary file beside ``path``, fsynced, then renamed onto ``path``: readers see the old
    file or the new one, never half of it. A large object (a checkpoint) is written as it is serialised, without a
    copy in memory first. A stop request (SIGTERM, Ctrl-C) that arrives meanwhile waits until the file is in place
    (:func:`interrupts_deferred`): interrupted halfway, a serialiser can raise its own error in place of the stop.

    Raises:
        MedtlError: as :func:`atomic_write_bytes`.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        if path.is_dir():
            raise IsADirectoryError(21, "a folder is in the way")
        path.parent.mkdir(parents=True, exist_ok=True)
        with interrupts_deferred():
            try:
                with open(tmp, "wb") as fh:
                    write(fh)
                    fh.flush()
                    os.fsync(fh.fileno())
            except BaseException:
                with contextlib.suppress(OSError):
                    tmp.unlink()
                raise
            os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            fix = f"free space on the disk holding {path.parent} (or write elsewhere), then run the command again"
        elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            fix = f"make {path.parent} writable (or write elsewhere)"
        else:
            fix = "check that the folder exists, is writable and has free space"
        raise MedtlError(f"cannot write {path} ({exc.strerror or exc})", path=str(path), fix=fix) from None


def medtl_home() -> Path:
    """medtl's cache folder: ``$MEDTL_HOME``, else ``~/.cache/medtl``."""
    return Path(os.environ.get("MEDTL_HOME", Path.home() / ".cache" / "medtl")).expanduser()


def is_rank_zero_env() -> bool:
    """Whether this process is rank 0 by the environment torchrun/SLURM/Lightning set (before any Trainer)."""
    return all(int(os.environ.get(k, "0") or 0) == 0 for k in ("LOCAL_RANK", "NODE_RANK", "RANK"))
