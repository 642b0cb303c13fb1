"""Which files a batch reads and where each output goes, on local disks or object stores.

Paths are handled by pyarrow filesystems: a plain path is local, ``s3://bucket/x`` (and any
other URI pyarrow understands) is remote. Outputs mirror the input tree; GIF (and any suffix
we do not write) becomes PNG, as in ``nullswap cloak``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import PurePosixPath

from ..errors import ConfigError, InputError
from ..imageio import FORMAT_BY_SUFFIX

__all__ = ["BatchItem", "IMAGE_SUFFIXES", "filesystem", "is_local", "list_images", "mirror_items",
           "existing_outputs"]

IMAGE_SUFFIXES = frozenset(FORMAT_BY_SUFFIX) | {".gif"}


@dataclass(frozen=True)
class BatchItem:
    """One image of a batch: ``path`` is read on ``in_fs``; ``label`` names it in reports;
    ``dst`` is written on ``out_fs`` (a local path, or a path inside the remote filesystem)."""

    path: str
    label: str
    dst: str


def filesystem(uri: str):
    """(pyarrow filesystem, path inside it) for a local path or a URI."""
    from pyarrow import fs as pafs

    if "://" not in uri:
        return pafs.LocalFileSystem(), os.path.abspath(uri)
    try:
        return pafs.FileSystem.from_uri(uri)
    except Exception as e:  # ArrowInvalid (unknown scheme), missing credentials, ...
        raise ConfigError(f"cannot open {uri}: {e}",
                          hint="use a local path or a URI pyarrow handles (s3://, gs://, abfs://, hdfs://)") from None


def is_local(fs) -> bool:
    return fs.type_name == "local"


def list_images(fs, root: str) -> tuple[list[str], str]:
    """Image files under ``root`` (sorted; a file is its own list) and the folder they mirror below."""
    from pyarrow import fs as pafs

    info = fs.get_file_info(root)
    if info.type == pafs.FileType.File:
        return [root], str(PurePosixPath(root).parent)
    if info.type != pafs.FileType.Directory:
        raise InputError(f"no such file or folder: {root}", hint="check the path or URI")
    found = fs.get_file_info(pafs.FileSelector(root, recursive=True))
    files = sorted(f.path for f in found if f.type == pafs.FileType.File
                   and PurePosixPath(f.path).suffix.lower() in IMAGE_SUFFIXES
                   and not PurePosixPath(f.path).name.startswith("."))  # our own temp files
    return files, root


def mirror_items(files: list[str], in_root: str, out_root: str, *, same_fs: bool,
                 in_uri: str) -> list[BatchItem]:
    """Each file's output below ``out_root``; files inside ``out_root`` (an earlier run's
    outputs, when the output folder lies inside the input folder) are left out."""
    items = []
    out_prefix = out_root.rstrip("/") + "/"
    for f in files:
        if same_fs and f.startswith(out_prefix):
            continue
        rel = PurePosixPath(f).relative_to(in_root) if f != in_root else PurePosixPath(PurePosixPath(f).name)
        dst = PurePosixPath(out_root) / rel
        if dst.suffix.lower() not in FORMAT_BY_SUFFIX:
            dst = dst.with_suffix(".png")
        if same_fs and str(dst) == f:
            raise ConfigError(f"output {dst} would overwrite its input", hint="choose another output folder")
        label = f if "://" not in in_uri else f"{in_uri.split('://', 1)[0]}://{f}"
        items.append(BatchItem(path=f, label=label, dst=str(dst)))
    if not items:
        raise ConfigError(f"no images found under {in_uri}",
                          hint=f"image suffixes: {' '.join(sorted(IMAGE_SUFFIXES))}")
    return items


def existing_outputs(fs, items: list[BatchItem]) -> set[str]:
    """The ``dst`` of every item whose output exists already (one listing call per 1000)."""
    from pyarrow import fs as pafs

    found: set[str] = set()
    dsts = [it.dst for it in items]
    for i in range(0, len(dsts), 1000):
        for info in fs.get_file_info(dsts[i:i + 1000]):
            if info.type != pafs.FileType.NotFound:
                found.add(info.path)
    return found
