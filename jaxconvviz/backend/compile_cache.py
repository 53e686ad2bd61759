"""A persistent XLA compilation cache, so a second run does not compile again.

Every ``jaxconvviz`` command is a new process, and XLA compiles each of its
programs from scratch. JAX's persistent compilation cache keeps them on disk;
on a 2-core CPU the second run of the same command was faster by what it no
longer compiled (``docs/design-notes.md``): ``render --filters 0:4 --size 64
--steps 32`` 12.0 -> 8.4 s, ``report --filters-per-layer 4 --size 48`` 43 ->
34 s, ``atlas --filters 0:8 --size 64`` 8.9 -> 8.3 s (mostly compute).

:func:`use_compile_cache` turns JAX's cache on in one directory. The CLI calls
it before any computation (``--compile-cache DIR|off``; default
:func:`default_directory`, or ``$JAXCONVVIZ_COMPILE_CACHE``). The library
never calls it on import: like :func:`jaxconvviz.use_cpu_cores` it changes a
process-wide JAX setting, which is the caller's to make. In a notebook,
``jcv.use_compile_cache()`` once after import does the same.

Values are unchanged: a cache hit loads the executable XLA compiled for the
same program, compiler options and JAX version (JAX's cache key), so results
are bit-identical to a fresh compilation. A setting the user already made
(``JAX_COMPILATION_CACHE_DIR`` or ``jax.config``) wins and is left alone.

The directory is kept under ``max_bytes`` by removing the least recently
used entries when the cache is turned on (JAX's own eviction needs the
``filelock`` package, which this library does not depend on). CPU entries
are small: 20-50 kB each (the report above: 0.8 MB).

Imports jax only.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax

from jaxconvviz.errors import InputError

__all__ = ["use_compile_cache", "default_directory", "prune", "ENV",
           "DEFAULT_MAX_BYTES", "MIN_COMPILE_SECONDS"]

#: Environment variable naming the CLI's cache directory, or ``off``.
ENV = "JAXCONVVIZ_COMPILE_CACHE"
#: Size the cache directory is pruned to when the cache is turned on.
DEFAULT_MAX_BYTES = 1 << 30
#: Programs that compile faster than this are not written. JAX's default, 1 s,
#: left most of the report's programs out (10 entries, 46 -> 39 s); 0.05 s
#: stores 41 entries in 0.8 MB (43 -> 34 s).
MIN_COMPILE_SECONDS = 0.05


def default_directory() -> Path:
    """``$XDG_CACHE_HOME/jaxconvviz/xla`` (``~/.cache/jaxconvviz/xla``)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "jaxconvviz" / "xla"


def prune(directory: str | os.PathLike, max_bytes: int) -> int:
    """Remove the least recently used files of ``directory`` (by access time,
    which JAX's cache updates on a hit, else modification time) until the
    files left hold at most ``max_bytes``; returns the bytes removed. Files
    that vanish meanwhile (another process pruning) are skipped."""
    entries = []
    with os.scandir(directory) as it:
        for e in it:
            try:
                if e.is_file(follow_symlinks=False):
                    st = e.stat(follow_symlinks=False)
                    entries.append((max(st.st_atime, st.st_mtime), st.st_size, e.path))
            except OSError:
                continue
    total = sum(size for _, size, _ in entries)
    removed = 0
    for _, size, path in sorted(entries):
        if total - removed <= max_bytes:
            break
        try:
            os.remove(path)
        except OSError:
            continue
        removed += size
    return removed


def use_compile_cache(directory: str | os.PathLike | None = None, *,
                      max_bytes: int = DEFAULT_MAX_BYTES,
                      min_compile_seconds: float = MIN_COMPILE_SECONDS) -> Path | None:
    """Turn on JAX's persistent compilation cache in ``directory``.

    Args:
      directory: where compiled programs are kept; None: ``$JAXCONVVIZ_COMPILE_CACHE``
        when set, else :func:`default_directory`. ``"off"``: do nothing.
      max_bytes: the directory is pruned to this size now (least recently
        used first); an int >= 0.
      min_compile_seconds: programs compiling faster than this are not cached
        (``JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS`` in the environment wins).

    Returns:
      The directory in use (the user's own ``jax_compilation_cache_dir`` when
      one is already set: it wins), or None when ``"off"``.

    Raises:
      InputError: ``max_bytes`` or ``min_compile_seconds`` out of range, or a
        directory that cannot be created or written.
    """
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0:
        raise InputError(f"max_bytes must be an int >= 0; got {max_bytes!r}.")
    if isinstance(min_compile_seconds, bool) or not isinstance(
            min_compile_seconds, (int, float)) or not min_compile_seconds >= 0:
        raise InputError(f"min_compile_seconds must be a number >= 0; "
                         f"got {min_compile_seconds!r}.")
    current = jax.config.jax_compilation_cache_dir
    if current:
        return Path(current)
    if directory is None:
        directory = os.environ.get(ENV) or default_directory()
    if str(directory) == "off":
        return None
    path = Path(directory).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
        if not os.access(path, os.W_OK | os.X_OK):
            raise PermissionError(13, "not writable")
        prune(path, max_bytes)
    except OSError as e:
        raise InputError(
            f"directory={str(path)!r} cannot hold the compilation cache "
            f"({e.strerror or e}); pass a writable directory, or 'off'.") from None
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
        jax.config.update("jax_persistent_cache_min_compile_time_secs",
                          float(min_compile_seconds))
    jax.config.update("jax_compilation_cache_dir", str(path))
    return path
