"""Official Keras weight files: how they are checked, found and downloaded.

The files themselves (name, URL, published hash, size) are the table
:data:`~jaxconvviz.models.weights.files.KERAS_FILES`.

A file is *available* when it is in the Keras cache (``$KERAS_HOME/models``
or ``~/.keras/models``, where ``keras.utils.get_file`` puts it) or in the
jaxconvviz store (:func:`~jaxconvviz.models.weights.store.store_dir`), with
the right size (checked first: cheap, and a truncated file fails with both
sizes) and the published hash. Nothing is downloaded unless asked:
:func:`fetch_imagenet` / :func:`fetch_application` download with a progress
bar (tqdm, stderr) into a temporary file that is renamed into place only
after the size and hash checks (:func:`download_file`); a failed or cut
download leaves nothing behind.

The environment variable ``JAXCONVVIZ_WEIGHTS_URL`` replaces the directory
of every official URL (the file name is appended), for mirrors and the
loopback tests.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path

from jaxconvviz._atomic import atomic_write
from jaxconvviz.errors import InputError, JaxConvVizError, MissingFileError
from jaxconvviz.models.weights.files import (
    APPLICATION_NAMES,
    BASE_URL,
    IMAGENET_FILES,
    KERAS_FILES,
    URL_ENV,
    KerasFile,
)
from jaxconvviz.models.weights.keras_files import read_keras_weights
from jaxconvviz.models.weights.store import (
    CONVERTED_FORMAT,
    file_hash,
    file_params,
    read_sidecar,
    sidecar_path,
    store_dir,
    write_converted,
)


class DownloadError(JaxConvVizError, OSError):
    """A download failed or was cut short (nothing was saved); the message
    says how to get the file another way."""


def did_you_mean(value: str, choices: Iterable[str]) -> str:
    """``"; did you mean 'imagenet'?"`` for the nearest choice (difflib), or
    ``""`` when none is close."""
    near = difflib.get_close_matches(str(value), list(choices), n=1, cutoff=0.6)
    return f"; did you mean {near[0]!r}?" if near else ""


def check_application(name: str) -> str:
    """``name`` if it is an application of :data:`KERAS_FILES`, else
    ``InputError`` listing them (with the nearest one)."""
    if not isinstance(name, str) or name not in KERAS_FILES:
        hint = did_you_mean(name, APPLICATION_NAMES) or "."
        raise InputError(
            f"name must be one of {', '.join(APPLICATION_NAMES)}; got "
            f"{name!r}{hint}"
        )
    return name


def official_url(spec: KerasFile) -> str:
    """The URL ``spec`` is downloaded from (``$JAXCONVVIZ_WEIGHTS_URL`` + name
    when that variable is set)."""
    base = os.environ.get(URL_ENV)
    if base:
        return base.rstrip("/") + "/" + spec.fname
    return spec.url or BASE_URL + spec.fname


def imagenet_url(include_top: bool = False) -> str:
    """The URL of the ImageNet VGG16 file (with or without classifier)."""
    return official_url(IMAGENET_FILES[bool(include_top)])


def keras_cache_dirs() -> list[Path]:
    """Where Keras' ``get_file`` keeps downloaded models, as Keras 3 decides it."""
    if "KERAS_HOME" in os.environ:
        base = Path(os.environ["KERAS_HOME"]).expanduser()
    else:
        home = Path.home()
        base = home / ".keras" if os.access(home, os.W_OK) else Path("/tmp/.keras")
    dirs = [base / "models"]
    fallback = Path("/tmp/.keras/models")
    if not os.access(base, os.W_OK) and fallback != dirs[0]:
        dirs.append(fallback)  # get_file falls back there if base is read-only
    return dirs


def file_matches(path: Path, spec: KerasFile, *, verify: bool = True) -> bool:
    """Whether ``path`` is ``spec``'s file: the size first (when known), then
    the published hash (when ``verify`` and Keras publishes one)."""
    if not path.is_file():
        return False
    if spec.size is not None and path.stat().st_size != spec.size:
        return False
    digest = spec.digest
    if not verify or digest is None:
        return True
    return file_hash(path, digest[0]) == digest[1]


def check_file(path: Path, spec: KerasFile) -> None:
    """Raise ``InputError`` naming the file and both sizes or both hashes
    unless ``path`` is ``spec``'s file (size checked before the hash)."""
    n = path.stat().st_size
    if spec.size is not None and n != spec.size:
        raise InputError(
            f"{path}: {n:,} bytes, but the official {spec.fname} has "
            f"{spec.size:,} bytes (truncated or not the official file)."
        )
    digest = spec.digest
    if digest is not None:
        got = file_hash(path, digest[0])
        if got != digest[1]:
            raise InputError(
                f"{path}: {digest[0].upper()} {got} does not match the published "
                f"{digest[1]} of {spec.fname}."
            )


# ----------------------------------------------------------------- download
def download_file(url: str, dest: Path, spec: KerasFile, *, progress: bool,
                  fix: str = "") -> Path:
    """Stream ``url`` to ``dest`` atomically: written to a temporary file,
    checked (the server's length and the official size before anything is
    read, the byte count, then the published hash), renamed into place.

    Args:
      url: where to download from.
      dest: the final path (its folder is created).
      spec: the official file (size and hash).
      progress: tqdm progress bar on stderr.
      fix: a sentence appended to download errors (how else to get the file).

    Raises:
      DownloadError: unreachable, refused or cut short (nothing saved).
      ValueError: a wrong size or hash (nothing saved).
    """
    import http.client

    from tqdm import tqdm

    tail = f" {fix}" if fix else ""
    digest = spec.digest

    def stream(out) -> None:
        hashers = {alg: hashlib.new(alg) for alg in ("md5", "sha256")}
        n = 0
        try:
            resp = urllib.request.urlopen(url, timeout=60)
        except (urllib.error.URLError, OSError, ValueError) as e:
            reason = getattr(e, "reason", e)
            raise DownloadError(f"cannot download {url}: {reason}.{tail}") from None
        with resp:
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            if total is not None and spec.size is not None and total != spec.size:
                raise InputError(
                    f"{url}: the server announces {total:,} bytes, but the "
                    f"official {spec.fname} has {spec.size:,} bytes; not the "
                    "official file; nothing was saved."
                )
            with tqdm(total=total or spec.size, unit="B", unit_scale=True,
                      unit_divisor=1024, desc=dest.name, file=sys.stderr,
                      disable=not progress, leave=False) as bar:
                while True:
                    try:
                        chunk = resp.read(1 << 20)
                    except (http.client.HTTPException, OSError) as e:
                        raise DownloadError(
                            f"download of {url} was interrupted after {n:,} bytes "
                            f"({type(e).__name__}); nothing was saved.{tail}"
                        ) from None
                    if not chunk:
                        break
                    out.write(chunk)
                    for h in hashers.values():
                        h.update(chunk)
                    n += len(chunk)
                    bar.update(len(chunk))
        if total is not None and n != total:
            raise DownloadError(
                f"download of {url} was interrupted: got {n:,} of {total:,} "
                f"bytes; nothing was saved.{tail}"
            )
        if spec.size is not None and n != spec.size:
            raise InputError(
                f"{url}: got {n:,} bytes, but the official {spec.fname} has "
                f"{spec.size:,} bytes (cut short or not the official file); "
                "nothing was saved."
            )
        if digest is not None:
            got = hashers[digest[0]].hexdigest()
            if got != digest[1]:
                raise InputError(
                    f"{url}: {digest[0].upper()} {got} does not match the "
                    f"published {digest[1]} ({n:,} bytes); the download is "
                    "damaged or not the official file; nothing was saved."
                )

    atomic_write(dest, stream, suffix=".part")
    return dest


# ------------------------------------------------------------ messages
def fetch_command(name: str = "imagenet", include_top: bool = False, *,
                  app: bool | None = None) -> str:
    """The CLI command that fetches a file: ``jaxconvviz weights fetch
    imagenet [--top]`` (VGG16: notop by default) or ``jaxconvviz weights fetch
    NAME [--notop]`` (applications: with the classifier by default)."""
    if app is None:
        app = name != "imagenet"
    if app:
        return f"jaxconvviz weights fetch {name}" + ("" if include_top else " --notop")
    return f"jaxconvviz weights fetch {name}" + (" --top" if include_top else "")


def missing_weights_message(name: str = "imagenet", include_top: bool = False, *,
                            download_flag: str | None = "download=True") -> str:
    """What to say when official weights are needed but not on this machine.

    Names the file, its size and URL, where it was looked for, the command
    that fetches it and (``download_flag``: ``"download=True"`` for the
    library, ``"--download"`` for a CLI command) what lets the caller
    download it itself. For ``name`` ``"imagenet"`` (VGG16) or an
    application of :data:`KERAS_FILES`. A CLI command that needs weights
    uses it instead of downloading silently::

        if W.application_available(name, top) is None and not args.download:
            raise CLIError(W.missing_weights_message(name, top,
                                                     download_flag="--download"))
    """
    app = "vgg16" if name == "imagenet" else check_application(name)
    spec = KERAS_FILES[app][bool(include_top)]
    what = "VGG16" if name == "imagenet" else name
    top = "with" if include_top else "without"
    where = ", ".join(str(d) for d in (*keras_cache_dirs(), store_dir()))
    msg = (
        f"the ImageNet weights of {what} ({top} classifier) are not on this "
        f"machine (looked in {where}). Fetch them once with "
        f"`{fetch_command(name, include_top, app=name != 'imagenet')}` "
        f"(downloads {spec.fname}, "
        f"{spec.describe_size()}, from {official_url(spec)})"
    )
    if download_flag:
        msg += f", or pass {download_flag} to download them now"
    return msg + "."


def _download_fix(name: str, include_top: bool, spec: KerasFile,
                  command: str | None = None) -> str:
    command = command or fetch_command(name, include_top)
    return (f"Fetch it when online with `{command}`, or "
            f"copy the official {spec.fname} into {keras_cache_dirs()[0]}.")


# ------------------------------------------------------------ VGG16 ImageNet
def converted_imagenet_path(include_top: bool) -> Path:
    """The store's converted ImageNet VGG16 file (``vgg16_imagenet_top.npz`` /
    ``..._notop.npz``)."""
    return store_dir() / f"vgg16_imagenet_{'top' if include_top else 'notop'}.npz"


def _converted_ok(path: Path, spec: KerasFile, verify: bool) -> bool:
    record = read_sidecar(path)
    if not path.is_file() or record is None:
        return False
    if record.get("format") != CONVERTED_FORMAT or record.get(
            "source_md5") != spec.md5:
        return False
    if record.get("size") != path.stat().st_size:
        return False
    return not verify or file_hash(path, "sha256") == record.get("sha256")


def imagenet_available(include_top: bool = False, *, verify: bool = True
                       ) -> Path | None:
    """The local ImageNet VGG16 file :func:`load_vgg16` would read, or None.

    Looks, in order, at the Keras cache (``$KERAS_HOME/models`` or
    ``~/.keras/models``; size- then MD5-checked), the converted file in
    :func:`store_dir` (SHA-256-checked against its sidecar), and a downloaded
    but not yet converted file in the store (size- then MD5-checked). Never
    downloads.

    Args:
      include_top: the file with the classifier (553,467,096 bytes) or
        without (58,889,256 bytes).
      verify: hash the file (False: only check it exists with the right size,
        for listings).
    """
    spec = IMAGENET_FILES[bool(include_top)]
    for d in keras_cache_dirs():
        if file_matches(d / spec.fname, spec, verify=verify):
            return d / spec.fname
    conv = converted_imagenet_path(include_top)
    if _converted_ok(conv, spec, verify):
        return conv
    raw = store_dir() / spec.fname
    if file_matches(raw, spec, verify=verify):
        return raw
    return None


def fetch_imagenet(include_top: bool = False, *, progress: bool = True,
                   command: str | None = None) -> Path:
    """Make the ImageNet VGG16 weights available locally; return the file.

    If :func:`imagenet_available` finds a file it is returned (a raw download
    left in the store is converted first). Otherwise the official Keras file
    is downloaded from :func:`imagenet_url` into the store
    (:func:`download_file`: size then MD5 checked before the atomic rename),
    converted once to ``vgg16_imagenet_{notop,top}.npz`` with a SHA-256
    sidecar, and the raw ``.h5`` removed.

    Args:
      include_top: fetch the 553,467,096-byte file with the classifier instead
        of the 58,889,256-byte notop file.
      progress: tqdm progress bar on stderr.
      command: the command a failed download tells the user to run (default:
        ``jaxconvviz weights fetch imagenet [--top]``).

    Raises:
      DownloadError (an ``OSError``): the download failed or was cut short.
      ValueError: the downloaded file's size or MD5 does not match.
    """
    spec = IMAGENET_FILES[bool(include_top)]
    found = imagenet_available(include_top)
    raw = store_dir() / spec.fname
    if found is not None and found != raw:
        return found
    if found is None:
        download_file(imagenet_url(include_top), raw, spec, progress=progress,
                      fix=_download_fix("imagenet", include_top, spec, command))
    dst = converted_imagenet_path(include_top)
    label = os.fspath(raw)
    write_converted(file_params("keras", read_keras_weights(raw), label), dst,
                    source=spec.fname, source_md5=spec.md5)
    raw.unlink()
    return dst


def imagenet_path(include_top: bool, *, progress: bool = True,
                  download: bool = True) -> Path:
    """The file ``load_vgg16("imagenet")`` reads: a local one (a top file
    serves ``include_top=False`` too), else fetched when ``download``.

    Raises:
      MissingFileError: not local and ``download=False`` (the message says
        the command that fetches it).
    """
    tops = (True,) if include_top else (False, True)  # the top file has the convs
    for top in tops:
        found = imagenet_available(top)
        if found is not None:
            if found == store_dir() / IMAGENET_FILES[top].fname:
                return fetch_imagenet(top, progress=progress)  # convert it once
            return found
    if not download:
        raise MissingFileError(missing_weights_message("imagenet", include_top))
    return fetch_imagenet(include_top, progress=progress)


# ------------------------------------------------------------- applications
def application_file(name: str, include_top: bool) -> KerasFile:
    """The official file of application ``name`` (see :data:`KERAS_FILES`)."""
    return KERAS_FILES[check_application(name)][bool(include_top)]


def _store_ok(path: Path, spec: KerasFile, verify: bool) -> bool:
    """A store copy: size + published hash, or (no published hash) the
    SHA-256 its sidecar recorded at download."""
    if not file_matches(path, spec, verify=verify):
        return False
    if spec.digest is not None or not verify:
        return True
    record = read_sidecar(path) or {}
    return record.get("sha256") == file_hash(path, "sha256")


def application_available(name: str, include_top: bool = True, *,
                          verify: bool = True) -> Path | None:
    """The local official weights file of application ``name``, or None.

    The Keras cache first (size, then the published hash), then the store.
    ``"vgg16"`` is :func:`imagenet_available`. Never downloads.
    """
    if check_application(name) == "vgg16":
        return imagenet_available(include_top, verify=verify)
    spec = KERAS_FILES[name][bool(include_top)]
    for d in keras_cache_dirs():
        if file_matches(d / spec.fname, spec, verify=verify):
            return d / spec.fname
    raw = store_dir() / spec.fname
    return raw if _store_ok(raw, spec, verify) else None


def fetch_application(name: str, include_top: bool = True, *,
                      progress: bool = True) -> Path:
    """Make application ``name``'s official weights available; return the file.

    A local file (:func:`application_available`) is returned as is;
    otherwise the official file is downloaded into the store with
    :func:`download_file` (size, then the published MD5/SHA-256; for
    MobileNetV2, whose hash Keras does not publish, the size only, and the
    SHA-256 of what was downloaded is recorded in a sidecar and checked on
    every later use). ``"vgg16"`` is :func:`fetch_imagenet`.

    Raises:
      DownloadError (an ``OSError``): the download failed or was cut short.
      ValueError: unknown name; the downloaded file's size or hash is wrong.
    """
    if check_application(name) == "vgg16":
        return fetch_imagenet(include_top, progress=progress,
                              command=fetch_command("vgg16", include_top))
    found = application_available(name, include_top)
    if found is not None:
        return found
    spec = KERAS_FILES[name][bool(include_top)]
    dest = store_dir() / spec.fname
    sidecar_path(dest).unlink(missing_ok=True)
    download_file(official_url(spec), dest, spec, progress=progress,
                  fix=_download_fix(name, include_top, spec))
    if spec.digest is None:
        import json

        record = {"file": spec.fname, "size": dest.stat().st_size,
                  "sha256": file_hash(dest, "sha256"), "url": official_url(spec),
                  "published_hash": None}
        text = json.dumps(record, indent=1).encode()
        atomic_write(sidecar_path(dest), lambda fh: fh.write(text))
    return dest


def application_weights_path(name: str, include_top: bool = True, *,
                             progress: bool = True, download: bool = True) -> Path:
    """The official weights file of ``name``: a local one (for
    ``include_top=False`` a local file with the classifier serves too: it has
    every convolutional layer), else fetched when ``download``, else
    ``MissingFileError`` saying the command that fetches it."""
    if check_application(name) == "vgg16":
        return imagenet_path(bool(include_top), progress=progress, download=download)
    for top in ((True,) if include_top else (False, True)):
        found = application_available(name, top)
        if found is not None:
            return found
    if not download:
        raise MissingFileError(missing_weights_message(name, include_top))
    return fetch_application(name, include_top, progress=progress)


__all__ = [
    "DownloadError",
    "official_url",
    "imagenet_url",
    "keras_cache_dirs",
    "file_matches",
    "check_file",
    "download_file",
    "fetch_command",
    "missing_weights_message",
    "did_you_mean",
    "check_application",
    "converted_imagenet_path",
    "imagenet_available",
    "fetch_imagenet",
    "imagenet_path",
    "application_file",
    "application_available",
    "fetch_application",
    "application_weights_path",
]
