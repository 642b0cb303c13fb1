"""``nullswap cloak``: files, folders and globs in; same format out, never clobbering inputs."""
from __future__ import annotations

import glob
import logging
from pathlib import Path

from .errors import ConfigError, NullSwapError

log = logging.getLogger("nullswap")

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"}


def expand_inputs(inputs: list[str]) -> list[tuple[Path, Path]]:
    """Each input file with the root it was found under (to mirror folder structure)."""
    found: list[tuple[Path, Path]] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found += [(f, p) for f in sorted(p.rglob("*")) if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES]
        elif p.is_file():
            found.append((p, p.parent))
        else:
            matches = sorted(Path(m) for m in glob.glob(item, recursive=True))
            if not matches:
                raise ConfigError(f"no such file, folder or match: {item}", hint="check the path or quote the glob")
            found += [(m, m.parent) for m in matches if m.is_file()]
    seen, unique = set(), []
    for f, root in found:
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            unique.append((f, root))
    return unique


def plan_outputs(files: list[tuple[Path, Path]], output: str | None, in_place: bool) -> list[tuple[Path, Path]]:
    if in_place:
        if output:
            raise ConfigError("--in-place and -o are exclusive", hint="drop one of them")
        return [(f, f) for f, _ in files]
    if not output:
        raise ConfigError("no output given", hint="pass -o FILE_OR_FOLDER, or --in-place to overwrite inputs")
    out = Path(output)
    single_file = len(files) == 1 and out.suffix.lower() in IMAGE_SUFFIXES and not out.is_dir()
    if single_file:
        pairs = [(files[0][0], out)]
    else:
        pairs = [(f, out / f.relative_to(root)) for f, root in files]
    for src, dst in pairs:
        if dst.resolve() == src.resolve():
            raise ConfigError(f"output {dst} would overwrite its input", hint="choose another -o, or --in-place")
    return pairs


def run_cloak(args) -> int:
    from tqdm import tqdm

    from .cli import parse_overrides
    from .cloaker import Cloaker
    from .imageio import load_image, save_image

    pairs = plan_outputs(expand_inputs(args.inputs), args.output, args.in_place)
    cloaker = Cloaker.from_pretrained(args.model, **parse_overrides(args))
    log.info("%r on %d file(s)", cloaker, len(pairs))
    n_faces = n_noface = 0
    failures: list[tuple[Path, str]] = []
    for src, dst in tqdm(pairs, desc="cloak", unit="img", disable=args.quiet or len(pairs) < 2):
        try:
            img = load_image(src)
            out, faces = cloaker.cloak(img.rgb, return_faces=True)
            if not faces:
                n_noface += 1
                log.warning("%s: no face found (at least %d px); written unchanged", src, cloaker.detector.min_face_size)
            n_faces += len(faces)
            dst.parent.mkdir(parents=True, exist_ok=True)
            save_image(
                dst, out, format=None, quality=args.quality, alpha=img.alpha,
                exif=img.exif if args.keep_metadata else None,
                icc_profile=img.icc_profile,  # colour profile is not personal data
                overwrite=args.overwrite or args.in_place,
            )
        except NullSwapError as e:
            failures.append((src, str(e)))
            log.error("%s: %s", src, e)
    ok = len(pairs) - len(failures)
    summary = f"{ok}/{len(pairs)} image(s) written, {n_faces} face(s) cloaked, {n_noface} without faces, {len(failures)} failed"
    if not args.quiet:
        print(summary)
    return 1 if failures else 0
