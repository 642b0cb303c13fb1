"""Access to the research face data in ``../shared/data`` (see its README.md).

The data never ships with the SDK; everything here only *lists* paths. All selection is
deterministic and derived from SHA-256 of (seed, name), not from Python's ``hash()`` (salted
per process) or numpy's RNG (streams may change between versions), so splits and evaluation
sets are the same on every machine and every run.
"""
from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path
from typing import Iterable, Mapping

from nullswap_sdk.errors import ConfigError

__all__ = [
    "DataNotFoundError", "DEFAULT_DATA_DIR", "data_dir", "lfw_identities",
    "celeba_wild_identities", "utkface_images", "split_identities", "lfw_pairs",
    "identification_sets",
]

# <repo>/nullswap_sdk/evaluation/datasets.py → parents[3] is the folder beside the repo.
DEFAULT_DATA_DIR = Path(__file__).resolve().parents[3] / "shared" / "data"
ENV_VAR = "NULLSWAP_DATA_DIR"
_IMAGE_EXT = {".jpg", ".jpeg", ".png"}
DEFAULT_SEED = "nullswap-v1"

Identities = Mapping[str, list[Path]]


class DataNotFoundError(ConfigError):
    """The research data folder (or one of its sub-folders) is missing."""

    default_hint = (f"put the data at {DEFAULT_DATA_DIR} or set {ENV_VAR} to the folder that "
                    "holds lfw/, celeba-wild/ and utkface/")


def data_dir() -> Path:
    """The data root: ``$NULLSWAP_DATA_DIR`` if set, else ``DEFAULT_DATA_DIR``."""
    env = os.environ.get(ENV_VAR)
    root = Path(env).expanduser() if env else DEFAULT_DATA_DIR
    if not root.is_dir():
        src = f"${ENV_VAR}" if env else "the default location"
        raise DataNotFoundError(f"data folder {root} (from {src}) does not exist")
    return root


def _subdir(name: str) -> Path:
    d = data_dir() / name
    if not d.is_dir():
        raise DataNotFoundError(f"{d} does not exist")
    return d


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in _IMAGE_EXT and p.is_file())


def _identity_folders(sub: str) -> dict[str, list[Path]]:
    out = {}
    for d in sorted(_subdir(sub).iterdir()):
        if d.is_dir():
            imgs = _images_in(d)
            if imgs:
                out[d.name] = imgs
    return out


def lfw_identities() -> dict[str, list[Path]]:
    """LFW identity (folder name) → sorted image paths, for every identity with ≥ 1 image."""
    return _identity_folders("lfw")


def celeba_wild_identities() -> dict[str, list[Path]]:
    """CelebA-in-the-wild identity (folder name) → sorted image paths."""
    return _identity_folders("celeba-wild")


def utkface_images() -> list[Path]:
    """All UTKFace image paths, sorted (no identities; age_gender_race in the file name)."""
    return _images_in(_subdir("utkface"))


def _unit_hash(*parts: str) -> float:
    """Stable uniform number in [0, 1) from the parts (NUL-joined so ("a","bc") != ("ab","c"))."""
    digest = hashlib.sha256("\0".join(parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0 ** 64


def split_identities(names: Iterable[str], val_fraction: float = 0.1,
                     seed: str = DEFAULT_SEED) -> tuple[list[str], list[str]]:
    """Identity-disjoint (train, val) split, each list sorted.

    A name goes to val iff ``sha256(seed, name)`` maps below ``val_fraction``, so each identity
    lands on the same side whatever other names are passed in (a subset splits consistently).
    """
    if not 0.0 <= val_fraction <= 1.0:
        raise ConfigError(f"val_fraction must be in [0, 1], got {val_fraction!r}")
    train, val = [], []
    for n in sorted(set(names)):
        (val if _unit_hash(str(seed), n) < val_fraction else train).append(n)
    return train, val


def _pick(rng: random.Random, n: int) -> int:
    # Only Random.random() is guaranteed to repeat across Python versions; derive indices from it.
    return min(int(rng.random() * n), n - 1)


def lfw_pairs(identities: Identities, n_same: int, n_diff: int,
              seed: str | int = DEFAULT_SEED) -> list[tuple[Path, Path, bool]]:
    """Verification pairs ``(path_a, path_b, same)``: ``n_same`` same-identity pairs, then
    ``n_diff`` different-identity pairs, no pair repeated (in either order).

    Same pairs: an identity with ≥ 2 images uniformly, then two distinct images of it, so
    prolific identities do not dominate. Different pairs: two distinct identities uniformly,
    one image of each. Deterministic in (identities, n_same, n_diff, seed).
    """
    if n_same < 0 or n_diff < 0:
        raise ConfigError(f"pair counts must be ≥ 0, got n_same={n_same}, n_diff={n_diff}")
    names = sorted(identities)
    multi = [n for n in names if len(identities[n]) >= 2]
    n_possible_same = sum(len(identities[n]) * (len(identities[n]) - 1) // 2 for n in multi)
    if n_same > n_possible_same:
        raise ConfigError(f"asked for {n_same} same pairs, only {n_possible_same} exist",
                          hint="lower n_same or pass more identities")
    if n_diff > 0 and len(names) < 2:
        raise ConfigError("different-identity pairs need at least 2 identities")
    rng = random.Random(f"{seed}\0pairs")
    # Rejection sampling; the cap turns a near-exhaustive request into an error, not a hang.
    max_tries = 50 * (n_same + n_diff) + 1000
    pairs: list[tuple[Path, Path, bool]] = []
    seen: set[tuple[Path, Path]] = set()

    def take(a: Path, b: Path, same: bool) -> None:
        key = (a, b) if a <= b else (b, a)
        if key not in seen:
            seen.add(key)
            pairs.append((a, b, same))

    tries = 0
    while len(pairs) < n_same:
        tries += 1
        imgs = identities[multi[_pick(rng, len(multi))]]
        i = _pick(rng, len(imgs))
        j = _pick(rng, len(imgs) - 1)
        take(imgs[i], imgs[j + (j >= i)], True)  # j skips i: two distinct images
        if tries > max_tries:
            raise ConfigError(f"could not draw {n_same} distinct same pairs",
                              hint="ask for fewer pairs than exist, or pass more identities")
    target = n_same + n_diff
    while len(pairs) < target:
        tries += 1
        i = _pick(rng, len(names))
        j = _pick(rng, len(names) - 1)
        a_imgs, b_imgs = identities[names[i]], identities[names[j + (j >= i)]]
        take(a_imgs[_pick(rng, len(a_imgs))], b_imgs[_pick(rng, len(b_imgs))], False)
        if tries > 2 * max_tries:
            raise ConfigError(f"could not draw {n_diff} distinct different pairs",
                              hint="ask for fewer pairs, or pass more identities")
    return pairs


def identification_sets(identities: Identities, min_images: int = 2,
                        max_identities: int | None = None, *, seed: str = DEFAULT_SEED,
                        ) -> tuple[list[tuple[str, Path]], list[tuple[str, Path]]]:
    """Gallery and probes for Top-1 identification (DESIGN.md §4), both sorted by identity.

    Identities with ≥ ``min_images`` images qualify; if ``max_identities`` is set, the ones
    with the lowest ``sha256(seed, name)`` are kept. Per identity, images are ordered by
    ``sha256(seed, name, file name)``: the first is the gallery photo (kept clean), the second
    the probe (the one to cloak). Each identity's choice depends on nothing else, so adding or
    removing identities never changes another's gallery/probe.
    """
    if min_images < 2:
        raise ConfigError(f"min_images must be ≥ 2 (gallery + probe), got {min_images}")
    if max_identities is not None and max_identities < 1:
        raise ConfigError(f"max_identities must be ≥ 1 or None, got {max_identities}")
    names = [n for n in sorted(identities) if len(identities[n]) >= min_images]
    if max_identities is not None:
        names = sorted(sorted(names, key=lambda n: _unit_hash(str(seed), "id", n))[:max_identities])
    if not names:
        raise ConfigError(f"no identity has ≥ {min_images} images",
                          hint="lower min_images or pass more identities")
    gallery, probes = [], []
    for n in names:
        ranked = ranked_photos(identities, n, seed=seed)
        gallery.append((n, ranked[0]))
        probes.append((n, ranked[1]))
    return gallery, probes


def ranked_photos(identities: Identities, name: str, *, seed: str = DEFAULT_SEED) -> list[Path]:
    """An identity's images in ``identification_sets``' order: the gallery photo, the probe,
    then the rest (from which reference photos are drawn, so they are never in the gallery)."""
    return sorted(identities[name], key=lambda p: (_unit_hash(str(seed), "img", name, Path(p).name), str(p)))
