"""Locating, hashing and (optionally) downloading data files."""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import shutil
import tempfile
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from bastion.errors import ChecksumError, DataError

log = logging.getLogger(__name__)

ENV_VAR = "BASTION_DATA"


def data_root(data_dir: str | os.PathLike[str] | None) -> Path:
    """``data_dir`` if given, else ``$BASTION_DATA``, else ``~/.cache/bastion``."""
    if data_dir is not None:
        return Path(data_dir).expanduser()
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    return Path("~/.cache/bastion").expanduser()


def digest(data: bytes, algo: str) -> str:
    return hashlib.new(algo, data).hexdigest()


def verify(data: bytes, expected: str, algo: str, *, what: str) -> None:
    got = digest(data, algo)
    if got != expected:
        raise ChecksumError(
            f"{what}: {algo} is {got}, expected {expected}. The file is corrupt, truncated or a different "
            "version; delete it and fetch the official file again (or pass verify=False for your own files)."
        )


def resolve_dir(root: Path, subdir: str, files: Sequence[str], *, urls: Sequence[str], download: bool,
                root_fallback: bool = True) -> Path:
    """The folder holding ``files``: ``root/subdir`` or (``root_fallback``) ``root`` itself; download into
    ``root/subdir`` if asked. Data sets whose files share names with another's (Fashion-MNIST's are MNIST's)
    pass ``root_fallback=False``, so that one is never read for the other.

    Raises a :class:`DataError` naming the missing files and where to put them.
    """
    for d in (root / subdir, root) if root_fallback else (root / subdir,):
        if all((d / f).exists() for f in files):
            return d
    target = root / subdir
    missing = [f for f in files if not (target / f).exists()]
    if not download:
        raise DataError(
            f"missing data files {missing} in {target}. Put the official files there, or point --data-dir "
            f"(Python: data_dir=) or ${ENV_VAR} at the folder holding them; where a network is available, "
            "load_dataset(..., download=True) fetches them. Sources: " + ", ".join(urls)
        )
    target.mkdir(parents=True, exist_ok=True)
    for name in missing:
        _download(name, target, urls)
    return target


def _download(name: str, target: Path, urls: Sequence[str]) -> None:
    errors = []
    for base in urls:
        url = base.rstrip("/") + "/" + name
        tmp_name = None
        try:
            log.info("downloading %s", url)
            with urllib.request.urlopen(url, timeout=15) as r, tempfile.NamedTemporaryFile(
                dir=target, delete=False, prefix=f".{name}.", suffix=".part"
            ) as tmp:
                tmp_name = tmp.name
                shutil.copyfileobj(r, tmp)
            os.replace(tmp.name, target / name)
            return
        except (OSError, http.client.HTTPException) as e:  # URLError and socket errors are OSErrors
            errors.append(f"{url}: {type(e).__name__}: {e}")
            if tmp_name is not None and os.path.exists(tmp_name):
                os.unlink(tmp_name)  # a partial download is never left behind
    raise DataError(f"could not download {name} into {target}: " + "; ".join(errors))
