"""``nullswap serve``: the HTTP cloaking service on uvicorn, or on Ray Serve with ``--ray``."""
from __future__ import annotations

import argparse

from ._common import add_overrides, add_verbosity, parse_overrides

__all__ = ["add_parser", "run"]

# Level max runs ~35-70 s per face on one CPU core (README 'Protection levels'): 30 s would
# answer 503 to every photo.
MAX_LEVEL_TIMEOUT_S = 600.0


def add_parser(sub) -> None:
    s = sub.add_parser("serve", help="HTTP cloaking service (needs the [serve] extra)",
                       description="POST /v1/cloak with raw image bytes (Content-Type image/*), or a multipart "
                                   "form with an 'image' part (and, with --level max, a 'reference' .npz from "
                                   "POST /v1/reference), returns the cloaked image in the same format; "
                                   "GET /healthz, /readyz, /metrics. "
                                   "Set NULLSWAP_API_KEY to require 'Authorization: Bearer KEY'.",
                       epilog="example: curl --data-binary @photo.jpg -H 'Content-Type: image/jpeg' "
                              "http://127.0.0.1:8000/v1/cloak -o photo.cloaked.jpg")
    add_verbosity(s)
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0: all)")
    s.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    s.add_argument("--model", default=None, help="cloaking model (default: the shipped default; see `info`)")
    s.add_argument("--level", choices=("low", "mid", "high", "max"), default=None,
                   help="protection level served by default (README 'Protection levels'); 'max' runs per-image "
                        "PGD (tens of seconds per face on a CPU core) and takes identity references "
                        "(POST /v1/reference)")
    s.add_argument("--min-face", type=float, default=None, metavar="PX", help="smallest face to find (default 48)")
    add_overrides(s, "threads=2")
    s.add_argument("--workers", type=int, default=1, metavar="N",
                   help="images cloaked at once, one model each (default 1; about one per free core)")
    s.add_argument("--max-queue", type=int, default=32, metavar="N",
                   help="requests that may wait for a worker; more get 429 (default 32)")
    s.add_argument("--max-upload-mb", type=float, default=25.0, metavar="MB", help="larger uploads get 413 (25)")
    s.add_argument("--max-pixels", type=float, default=50e6, metavar="N",
                   help="larger images get 413: decompression-bomb guard (default 50e6)")
    s.add_argument("--timeout", type=float, default=None, metavar="S",
                   help="per request (upload, queue, work); 503 past it (default 30, or %g with --level max)"
                        % MAX_LEVEL_TIMEOUT_S)
    s.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                   help="deploy on Ray Serve instead (needs the [ray] extra): 'local' (default), "
                        "'auto' or HOST:6379")
    s.add_argument("--replicas", type=int, default=1, metavar="N", help="with --ray: replicas (default 1)")
    s.add_argument("--max-replicas", type=int, default=None, metavar="N",
                   help="with --ray: autoscale between --replicas and N")


def run(args: argparse.Namespace) -> int:
    """Serve until interrupted; usage errors raise (exit code 2 in ``cli.main``)."""
    from ..errors import ConfigError
    from ..serve.config import ServeConfig

    if not args.ray and (args.replicas != 1 or args.max_replicas is not None):
        raise ConfigError("--replicas/--max-replicas only apply with --ray", hint="add --ray, or drop them")
    timeout = args.timeout if args.timeout is not None else MAX_LEVEL_TIMEOUT_S if args.level == "max" else 30.0
    config = ServeConfig(
        model=args.model, level=args.level, min_face_size=args.min_face, overrides=parse_overrides(args),
        workers=args.workers, max_queue=args.max_queue, max_upload_bytes=int(args.max_upload_mb * 2**20),
        max_pixels=int(args.max_pixels), timeout_s=timeout, api_key=ServeConfig.api_key_from_env())
    if args.ray:
        from ..serve.ray_serve import run as run_ray_serve

        try:
            run_ray_serve(config, address=args.ray, host=args.host, port=args.port,
                          replicas=args.replicas, max_replicas=args.max_replicas)
        except KeyboardInterrupt:  # Ctrl-C is how a foreground Serve deployment is stopped
            pass
    else:
        from ..serve.server import run_server

        level = "warning" if args.quiet else ("info", "info", "debug")[min(args.verbose, 2)]
        run_server(config, args.host, args.port, log_level=level)
    return 0
