"""``CloakWorker``: the Ray Data actor that cloaks batches of encoded images.

One ``Cloaker`` per actor, built once in ``__init__``; each ``__call__`` gets a batch of
``{"path", "bytes"}`` rows from ``read_binary_files`` and returns one outcome row per image.
A bad image is an outcome (``failed`` with the error and its hint), never an exception, so
it cannot fail the job. Writes are atomic: a worker killed mid-image leaves no partial
output, and Ray retries the batch on a restarted actor.
"""
from __future__ import annotations

import logging
import uuid
from pathlib import Path, PurePosixPath

from ..cloak_file import cloak_file, failure_message
from ..errors import OutputExistsError
from .plan import is_local

__all__ = ["CloakWorker", "OUTCOME_COLUMNS"]

log = logging.getLogger(__name__)
OUTCOME_COLUMNS = ("path", "dst", "status", "faces", "error")
_ATOMIC_PUT = {"s3", "gcs"}  # object stores where an upload appears whole or not at all


class CloakWorker:
    """Callable class for ``Dataset.map_batches(..., concurrency=N)``.

    ``targets_ref``: ``[ObjectRef]`` of a ``{path: (label, dst)}`` dict (wrapped in a list so
    Ray hands over the reference and every actor fetches the one shared copy).
    """

    def __init__(self, config, targets_ref: list, out_fs) -> None:
        import ray
        import torch

        torch.set_num_threads(1)  # one core per actor; more threads only contend
        self.targets: dict[str, tuple[str, str]] = ray.get(targets_ref[0])
        device = "cuda" if ray.get_gpu_ids() else "cpu"
        self.cloaker = config.build_cloaker(device=device)
        self.opts = config.write
        self.out_fs = out_fs
        self.local_out = is_local(out_fs)

    def __call__(self, batch: dict) -> dict:
        out: dict[str, list] = {k: [] for k in OUTCOME_COLUMNS}
        for path, data in zip(batch["path"], batch["bytes"]):
            path = str(path)
            status, faces, error = self.cloak_one(path, bytes(data))
            for k, v in zip(OUTCOME_COLUMNS, (path, self.targets[path][1], status, faces, error)):
                out[k].append(v)
        return out

    def cloak_one(self, path: str, data: bytes) -> tuple[str, int, str]:
        """(status, faces, error) for one image: ``written``, ``noface`` or ``failed``."""
        label, dst = self.targets[path]
        try:
            if self.local_out:
                try:
                    faces = cloak_file(self.cloaker, label, Path(dst), self.opts, data=data)
                except OutputExistsError:
                    # Outputs that existed before the job were filtered out by the driver, so
                    # this one was written by an earlier attempt of this batch (a Ray retry).
                    faces = self.cloaker.cloak(_decode(data, label), return_faces=True)[1]
            else:
                faces = self._cloak_to_remote(label, dst, data)
        except Exception as e:  # noqa: BLE001  one bad image must not fail the batch
            log.debug("%s failed", label, exc_info=True)
            return "failed", 0, failure_message(e)
        return ("written" if faces else "noface"), len(faces), ""

    def _cloak_to_remote(self, label: str, dst: str, data: bytes) -> list:
        from ..imageio import FORMAT_BY_SUFFIX, encode_image, load_image

        img = load_image(data, name=label)
        out, faces = self.cloaker.cloak(img.rgb, return_faces=True)
        payload = encode_image(out, FORMAT_BY_SUFFIX[PurePosixPath(dst).suffix.lower()],
                               quality=self.opts.quality, alpha=img.alpha,
                               exif=img.exif if self.opts.keep_metadata else None,
                               icc_profile=img.icc_profile)
        fs = self.out_fs
        parent = str(PurePosixPath(dst).parent)
        fs.create_dir(parent, recursive=True)
        if fs.type_name in _ATOMIC_PUT:
            with fs.open_output_stream(dst) as f:
                f.write(payload)
        else:  # write beside, then rename: readers never see a partial file
            tmp = f"{parent}/.{PurePosixPath(dst).name}.{uuid.uuid4().hex}.tmp"
            with fs.open_output_stream(tmp) as f:
                f.write(payload)
            fs.move(tmp, dst)
        return faces


def _decode(data: bytes, label: str):
    from ..imageio import load_image

    return load_image(data, name=label).rgb
