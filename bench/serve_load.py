"""Bounded loopback load test of `nullswap serve`: N concurrent clients for T seconds.

    python3 bench/serve_load.py --clients 16 --seconds 30 --workers 2 --out docs/results/serve_load.json

Starts the real service (`python -m nullswap_sdk.cli serve`) in a subprocess on 127.0.0.1,
warms it up, then N httpx clients (one asyncio loop, keep-alive) POST the same LFW photo
(JPEG, 250x250, one face; or --photo) back to back for T seconds. Records latency
percentiles, requests/s, status codes, and the server's RSS at start, every second and at the
end; stops the server with SIGTERM. Clients and server share the machine's cores.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from _record import emit  # bench/ is on sys.path when a script here runs

import httpx

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("NULLSWAP_DATA_DIR", ROOT.parent / "shared" / "data"))


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q / 100 * (len(s) - 1))))]


async def _load(base: str, body: bytes, ctype: str, clients: int, seconds: float, pid: int) -> dict:
    lat: list[float] = []
    codes: Counter = Counter()
    rss: list[float] = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as client:
        end = time.monotonic() + seconds

        async def one_client():
            while time.monotonic() < end:
                t = time.perf_counter()
                try:
                    r = await client.post("/v1/cloak", content=body, headers={"Content-Type": ctype})
                    codes[r.status_code] += 1
                except httpx.HTTPError as e:
                    codes[type(e).__name__] += 1
                    continue
                lat.append(time.perf_counter() - t)

        async def sample_rss():
            while time.monotonic() < end:
                rss.append(_rss_mib(pid))
                await asyncio.sleep(1)

        t0 = time.perf_counter()
        await asyncio.gather(sample_rss(), *(one_client() for _ in range(clients)))
        wall = time.perf_counter() - t0
    ok = codes.get(200, 0)
    return {"requests": sum(codes.values()), "ok": ok, "errors": sum(codes.values()) - ok,
            "status": {str(k): v for k, v in codes.items()}, "wall_s": round(wall, 1),
            "req_per_s": round(ok / wall, 1),
            "latency_ms": {"p50": round(_pct(lat, 50) * 1e3, 1), "p90": round(_pct(lat, 90) * 1e3, 1),
                           "p99": round(_pct(lat, 99) * 1e3, 1), "max": round(max(lat) * 1e3, 1),
                           "mean": round(statistics.fmean(lat) * 1e3, 1)},
            "rss_mib_samples": [round(x) for x in rss]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--seconds", type=float, default=30)
    p.add_argument("--workers", type=int, default=2, help="nullswap serve --workers")
    p.add_argument("--photo", default=None, help="default: the first LFW photo")
    p.add_argument("--out", help="write the JSON record here")
    args = p.parse_args()
    photo = Path(args.photo) if args.photo else sorted((DATA / "lfw").glob("*/*_0001.jpg"))[0]
    body = photo.read_bytes()
    ctype = "image/png" if photo.suffix.lower() == ".png" else "image/jpeg"
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    server = subprocess.Popen([sys.executable, "-m", "nullswap_sdk.cli", "serve", "--port", str(port),
                               "--workers", str(args.workers), "--max-queue", str(max(32, args.clients)), "-q"],
                              env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, timeout=30) as c:
            for _ in range(600):
                try:
                    if c.get("/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
            for _ in range(20):  # warm-up: sessions, allocator, first-call costs
                assert c.post("/v1/cloak", content=body, headers={"Content-Type": ctype}).status_code == 200
        rss_start = _rss_mib(server.pid)
        rec = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
               "machine": f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}, no GPU",
               "photo": f"{photo.name} ({len(body):,} bytes)", "clients": args.clients,
               "seconds": args.seconds, "server_workers": args.workers, "load_before": os.getloadavg()}
        rec.update(asyncio.run(_load(base, body, ctype, args.clients, args.seconds, server.pid)))
        rec["rss_mib_start"], rec["rss_mib_end"] = round(rss_start), round(_rss_mib(server.pid))
        load = os.getloadavg()  # while the server still ran
    finally:
        server.send_signal(signal.SIGTERM)
        rc = server.wait(60)
    rec["server_exit"], rec["load_after"] = rc, load
    emit(rec, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
