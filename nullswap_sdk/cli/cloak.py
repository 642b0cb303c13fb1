"""``nullswap cloak``: files, folders and globs in; same format out, never clobbering inputs."""
from __future__ import annotations

import argparse
import glob
import os
from pathlib import Path

from ..errors import ConfigError, NullSwapError
from ..imageio import FORMAT_BY_SUFFIX
from ._common import add_level_argument, add_overrides, add_verbosity, log, parse_overrides, resolve_level

__all__ = ["add_parser", "run", "expand_inputs", "plan_outputs", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"}


def add_parser(sub) -> None:
    c = sub.add_parser("cloak", help="cloak photos (files, folders, globs)",
                       description="Cloak every face in photos; outputs keep each input's format.",
                       epilog="exit codes: 0 every image written (photos without faces included), "
                              "1 some images failed (reported; the others were written), "
                              "2 bad arguments or model: nothing processed, 130 interrupted")
    c.add_argument("inputs", nargs="+", help="image files, folders (recursive) or glob patterns")
    add_verbosity(c)
    c.add_argument("-o", "--output", help="output file (one input) or folder (structure mirrored)")
    c.add_argument("--in-place", action="store_true", help="overwrite the inputs (atomically)")
    c.add_argument("--model", default=None, help="cloaking model (default: the shipped default; see `info`)")
    c.add_argument("--quality", type=int, default=95, help="JPEG/WebP quality (default 95)")
    c.add_argument("--strength", type=float, default=None,
                   help="perturbation scale (default 1.0; 0.5-2 trades quality for protection)")
    add_level_argument(c)
    c.add_argument("--min-face", type=float, default=None, metavar="PX",
                   help="smallest face to find, native pixels (default 24: every face a recogniser "
                        "can still identify, ~30 ms detection at 1080p; 48 is ~2x faster)")
    c.add_argument("--keep-metadata", action="store_true",
                   help="keep EXIF (GPS included!); by default EXIF, XMP and comments are stripped "
                        "and only the ICC colour profile is kept")
    c.add_argument("--overwrite", action="store_true", help="replace existing output files")
    c.add_argument("--skip-existing", action="store_true",
                   help="leave outputs that already exist as they are and count them as skipped, not "
                        "failed: rerun an interrupted batch to finish it")
    c.add_argument("--steps", type=int, default=None, help="PGD steps (pgd models only)")
    c.add_argument("--reference", action="append", default=[], metavar="PHOTO",
                   help="another photo of the person to protect (give 2-5: one alone measured no gain; use photos "
                        "you are not publishing) or a reference saved by `nullswap reference` (.npz): "
                        "--level max then hides the person, not only this photo's pose and light; faces "
                        "that do not match it are cloaked as usual")
    add_overrides(c, "threads=2")
    c.add_argument("--ray", metavar="ADDRESS", default=None,
                   help="cloak on a Ray cluster (needs the [ray] extra): 'local' starts one here, 'auto' "
                        "joins the one `ray start` runs here, else HOST:6379 or ray://HOST:10001 (paths "
                        "must be visible to every node); same outputs, summary and exit codes")
    c.add_argument("--workers", type=int, default=None, metavar="N",
                   help="with --ray: cloaking actors (default: one per CPU, 4 per GPU)")


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
            root = _glob_root(item)  # "album/**/*.jpg" mirrors below album/
            found += [(m, root) for m in matches if m.is_file()]
    seen, unique = set(), []
    for f, root in found:
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            unique.append((f, root))
    return unique


def _glob_root(pattern: str) -> Path:
    """The folder part of ``pattern`` before its first wildcard."""
    parts = Path(pattern).parts
    fixed = parts[: next((i for i, q in enumerate(parts) if glob.has_magic(q)), len(parts))]
    return Path(*fixed) if fixed else Path(".")


def plan_outputs(files: list[tuple[Path, Path]], output: str | None, in_place: bool) -> list[tuple[Path, Path]]:
    """(input, output) pairs. Folder outputs mirror each input's path below its root.

    GIF inputs are written as PNG (a 256-colour palette would destroy the cloak); inputs that
    lie inside the output folder (outputs of an earlier run) are left out.
    """
    if in_place:
        if output:
            raise ConfigError("--in-place and -o are exclusive", hint="drop one of them")
        unwritable = [f for f, _ in files if f.suffix.lower() not in FORMAT_BY_SUFFIX]
        if unwritable:
            f = unwritable[0]
            why = "GIF output is not supported" if f.suffix.lower() == ".gif" else \
                f"its suffix {f.suffix or '(none)'!r} names no format we write"
            raise ConfigError(f"cannot cloak {f} in place: {why}",
                              hint=f"use -o OUT_DIR (GIFs are written as PNG); writable: {sorted(FORMAT_BY_SUFFIX)}")
        return [(f, f) for f, _ in files]
    if not output:
        raise ConfigError("no output given", hint="pass -o FILE_OR_FOLDER, or --in-place to overwrite inputs")
    out = Path(output)
    single_file = len(files) == 1 and out.suffix.lower() in IMAGE_SUFFIXES and not out.is_dir()
    if single_file:
        if out.suffix.lower() not in FORMAT_BY_SUFFIX:
            raise ConfigError(f"cannot write {out.name}: GIF output is not supported",
                              hint="use .png (lossless), .jpg, .webp or .tif")
        pairs = [(files[0][0], out)]
    else:
        if out.is_file():
            raise ConfigError(f"-o {out} is a file but there are {len(files)} inputs", hint="pass a folder")
        out_abs = out.resolve()
        pairs = []
        for f, root in files:
            if out_abs in f.resolve().parents:
                log.info("skipping %s: it is inside the output folder", f)
                continue
            dst = out / f.relative_to(root)
            if dst.suffix.lower() not in FORMAT_BY_SUFFIX:
                dst = dst.with_suffix(".png")
            pairs.append((f, dst))
    targets: dict[Path, Path] = {}
    for src, dst in pairs:
        if dst.resolve() == src.resolve():
            raise ConfigError(f"output {dst} would overwrite its input", hint="choose another -o, or --in-place")
        other = targets.setdefault(dst.resolve(), src)
        if other is not src:
            raise ConfigError(f"{other} and {src} would both be written to {dst}",
                              hint="cloak the folders one at a time, or pass their common parent folder")
    if not pairs:
        raise ConfigError("no input images left to cloak", hint="check the inputs and -o")
    return pairs


def run(args: argparse.Namespace) -> int:
    """Cloak every input; one bad image is reported and skipped, never fatal.

    Returns 0 when every image was written (photos without faces count: they are copied
    unchanged, metadata policy applied), 1 when some failed. Usage errors raise and become
    exit code 2 in ``cli.main``.
    """
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    from ..cloaker import Cloaker

    if not 1 <= args.quality <= 100:  # checked up front: it would otherwise fail every image
        raise ConfigError(f"--quality must be 1..100, got {args.quality}", hint="95 is the default")
    if getattr(args, "workers", None) is not None and not getattr(args, "ray", None):
        raise ConfigError("--workers only applies with --ray", hint="add --ray local, or drop --workers")
    if getattr(args, "skip_existing", False) and (args.overwrite or args.in_place):
        raise ConfigError("--skip-existing contradicts --overwrite / --in-place", hint="drop one of them")
    resolve_level(args)
    if getattr(args, "reference", None) and getattr(args, "ray", None):
        raise ConfigError("--reference is not supported with --ray", hint="cloak with references in one process")
    pairs = plan_outputs(expand_inputs(args.inputs), args.output, args.in_place)
    skipped = 0
    if getattr(args, "skip_existing", False):
        todo = [(src, dst) for src, dst in pairs if not dst.exists()]
        skipped, pairs = len(pairs) - len(todo), todo
    cloaker = Cloaker.from_pretrained(args.model, min_face_size=getattr(args, "min_face", None),
                                      **parse_overrides(args))
    if getattr(args, "strength", None) is not None:
        cloaker.strength = args.strength
    log.info("%r strength %g on %d file(s)", cloaker, cloaker.strength, len(pairs))
    tally = {"faces": 0, "noface": 0, "reference": 0}
    reference = None
    if getattr(args, "reference", None):
        try:
            reference = _load_reference(cloaker, args.reference)
        except BaseException:
            cloaker.close()
            raise
        log.info("identity reference from %d photo(s)", reference.photos)
    failures: list[tuple[Path, str]] = []
    if getattr(args, "ray", None):  # the model was checked above: a bad one exits 2 before Ray starts
        min_face = cloaker.detector.min_face_size
        cloaker.close()
        with logging_redirect_tqdm():
            _cloak_on_ray(pairs, args, tally, failures, min_face)
    else:
        with cloaker, logging_redirect_tqdm():  # log lines above the bar, not through it
            for src, dst in tqdm(pairs, desc="cloak", unit="img", disable=args.quiet or len(pairs) < 2):
                try:
                    _cloak_one(cloaker, src, dst, args, tally, reference)
                except NullSwapError as e:
                    failures.append((src, str(e)))
                    log.error("%s: %s", src, e)
                except Exception as e:  # noqa: BLE001  one broken file must not stop a batch
                    failures.append((src, f"{type(e).__name__}: {e}"))
                    log.error("%s: unexpected %s: %s", src, type(e).__name__, e)
                    log.debug("traceback", exc_info=True)
    ok = len(pairs) - len(failures)
    if not args.quiet:
        print(f"{ok}/{len(pairs)} image(s) written, {tally['faces']} face(s) cloaked"
              + (f" ({tally['reference']} matched the reference)" if reference is not None else "")
              + f", {tally['noface']} without faces, {len(failures)} failed"
              + (f", {skipped} skipped (already written)" if skipped else ""))
        for src, why in failures:
            print(f"  failed: {src}: {why}")
    return 1 if failures else 0


def _write_options(args):
    from ..cloak_file import WriteOptions

    return WriteOptions(quality=args.quality, keep_metadata=args.keep_metadata,
                        overwrite=args.overwrite or args.in_place)


def _load_reference(cloaker, items: list[str]):
    """``--reference`` values: one saved reference (.npz), or photos to build one from."""
    from ..cloakers.reference import IdentityReference

    saved = [i for i in items if i.lower().endswith(".npz")]
    if saved:
        if len(items) > 1:
            raise ConfigError("pass one saved reference (.npz) or reference photos, not both",
                              hint="build a new reference from all the photos instead")
        reference = IdentityReference.load(saved[0])
        cloaker.check_reference(reference)
        return reference
    return cloaker.reference(items)  # a missing or broken photo is load_image's typed error


def _cloak_one(cloaker, src: Path, dst: Path, args, tally: dict, reference=None) -> None:
    from ..cloak_file import check_output, cloak_file

    opts = _write_options(args)
    check_output(dst, opts)
    faces = cloak_file(cloaker, src, dst, opts, reference=reference)
    tally["reference"] += sum(f.reference for f in faces)
    log.debug("%s: %d face(s), %s", src, len(faces), ", ".join(f"{f.psnr_crop:.1f} dB" for f in faces))
    _count(tally, src, len(faces), cloaker.detector.min_face_size)


def _count(tally: dict, src, faces: int, min_face: float) -> None:
    if not faces:
        tally["noface"] += 1
        log.warning("%s: no face found (at least %d px); written unchanged", src, min_face)
    tally["faces"] += faces


def _cloak_on_ray(pairs, args, tally: dict, failures: list, min_face: float) -> None:
    """``--ray``: the same per-image work (``cloak_file``) on Ray Data actors, the same tally."""
    from ..cloak_file import check_output
    from ..distributed import BatchConfig, connect, run_batch
    from ..distributed.plan import BatchItem

    opts = _write_options(args)
    failed: dict[int, str] = {}
    items, index = [], {}
    for i, (src, dst) in enumerate(pairs):
        try:
            check_output(dst, opts)  # as the single-process loop does, before any work
        except NullSwapError as e:
            failed[i] = str(e)
            log.error("%s: %s", src, e)
            continue
        index[str(src)] = i
        items.append(BatchItem(path=str(src.resolve()), label=str(src), dst=str(dst.resolve())))
    config = BatchConfig(model=args.model, strength=args.strength, min_face_size=args.min_face,
                         overrides=parse_overrides(args), quality=args.quality,
                         keep_metadata=args.keep_metadata, workers=args.workers,
                         existing="overwrite" if opts.overwrite else "error")
    if items:
        if not getattr(args, "verbose", 0):  # Ray Data's per-run INFO lines; -v shows them
            os.environ.setdefault("RAY_DATA_LOG_LEVEL", "WARNING")
        started = connect(args.ray)
        try:
            report = run_batch(items, config, progress=not args.quiet and len(items) > 1)
        finally:
            if started:
                import ray

                ray.shutdown()
        for o in report.outcomes:
            if o.status == "failed":
                failed[index[o.src]] = o.error
                log.error("%s: %s", o.src, o.error)
            else:
                _count(tally, o.src, o.faces, min_face)
    failures += [(pairs[i][0], failed[i]) for i in sorted(failed)]
