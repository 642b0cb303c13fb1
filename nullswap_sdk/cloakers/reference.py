"""Identity references: other photos of the person, so a per-image cloak hides the person.

A recogniser in use matches a cloaked photo against *other* photos of the person, while the
untargeted loss pushes the cloaked face away from the same photo's clean embedding, part of
which is that photo's pose, light and expression. Given a few other photos, the loss's
reference becomes a blend of the photo's own embedding and the person's mean one
(``PGDConfig.reference_mix``). Build one with ``Cloaker.reference(photos)``; it holds only
unit embeddings (no pixels), per surrogate, and can be saved for later sessions.
"""
from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigError

__all__ = ["IdentityReference", "blend_references", "MAX_FILE_BYTES"]

# A reference is a few unit embeddings (~5 KB for level max); far larger is not one.
MAX_FILE_BYTES = 1 << 20


def blend_references(own, other, use, mix: float):
    """Unit references normalize((1 − mix)·own + mix·other) where ``use`` (B,), else ``own``
    (B, D); ``other`` is (B, D) or one (D,) embedding. The cosine to such a reference is a fixed
    positive blend of the cosines to both. Shared by PGD and training (``loss.centroid_mix``)."""
    import torch
    import torch.nn.functional as F

    return torch.where(use[:, None], F.normalize((1 - mix) * own + mix * other, dim=-1), own)


@dataclass(frozen=True)
class IdentityReference:
    """Per surrogate name, the normalised mean of the unit embeddings of ``photos`` face crops."""

    embeddings: dict[str, np.ndarray]
    photos: int

    def __post_init__(self) -> None:
        if not self.embeddings or self.photos < 1:
            raise ConfigError("an identity reference needs at least one photo's embeddings")
        for name, e in self.embeddings.items():
            if e.ndim != 1 or not np.all(np.isfinite(e)) or abs(float(np.linalg.norm(e)) - 1) > 1e-3:
                raise ConfigError(f"identity reference for {name!r} is not a unit embedding",
                                  hint="build it with cloaker.reference(photos)")

    def to_bytes(self) -> bytes:
        """The .npz file ``save`` writes, as bytes (e.g. an HTTP response)."""
        buf = io.BytesIO()
        np.savez(buf, photos=np.array(self.photos), names=np.array(sorted(self.embeddings)),
                 **{f"e_{n}": self.embeddings[n] for n in sorted(self.embeddings)})
        return buf.getvalue()

    def save(self, path: str | Path) -> Path:
        """Write the reference to ``path`` (.npz; embeddings only, no pixels), atomically."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npz")
        tmp.write_bytes(self.to_bytes())
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "IdentityReference":
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"identity reference {p} not found", hint="build one with cloaker.reference(photos)")
        return cls.from_bytes(p.read_bytes(), name=str(p))

    @classmethod
    def from_bytes(cls, data: bytes, name: str = "the identity reference") -> "IdentityReference":
        """Parse a saved reference; ``ConfigError`` naming ``name`` for anything else. Safe on
        untrusted bytes (an upload): no pickles, and a file that would inflate past
        ``MAX_FILE_BYTES`` (a zip bomb) is refused before it is read."""
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as z:
                size = sum(i.file_size for i in z.infolist())
            if size > MAX_FILE_BYTES:
                raise ConfigError(f"{name} holds {size:,} bytes of arrays, more than any identity reference "
                                  f"({MAX_FILE_BYTES:,})", hint="send the .npz written by `nullswap reference`")
            with np.load(io.BytesIO(data), allow_pickle=False) as z:
                names = [str(n) for n in z["names"]]
                return cls({n: z[f"e_{n}"].astype(np.float32) for n in names}, int(z["photos"]))
        except ConfigError:
            raise
        except Exception as e:  # truncated or foreign file: say which, not a zipfile trace
            raise ConfigError(f"{name} is not an identity reference file ({type(e).__name__}: {e})",
                              hint="rebuild it with cloaker.reference(photos).save(path)") from e
