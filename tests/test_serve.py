"""The HTTP service on a real uvicorn server (127.0.0.1) with a real HTTP client, and the same
app on Ray Serve. Outputs must equal the SDK's; every bad request gets 4xx JSON with a hint."""
from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("prometheus_client")
httpx = pytest.importorskip("httpx")

from nullswap_sdk.serve import ServeConfig  # noqa: E402
from tests.test_bad_input import _png_bomb  # noqa: E402

KEY = "k" * 24


@contextmanager
def _server(config: ServeConfig):
    """uvicorn on a free loopback port in a thread; yields (client, uvicorn.Server)."""
    import uvicorn

    from nullswap_sdk.serve.server import uvicorn_config

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn_config(config, "127.0.0.1", sock.getsockname()[1], log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    client = httpx.Client(base_url=f"http://127.0.0.1:{sock.getsockname()[1]}", timeout=60)
    try:
        _wait_ready(client)
        yield client, server
    finally:
        client.close()
        server.should_exit = True
        thread.join(30)
        sock.close()


def _wait_ready(client, seconds: float = 60):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            if client.get("/readyz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError("the service did not become ready")


@pytest.fixture(scope="module")
def service():
    with _server(ServeConfig(workers=2, max_upload_bytes=2**20, max_pixels=4_000_000, timeout_s=30)) as (c, _):
        yield c


@pytest.fixture(scope="module")
def cloaker():
    from nullswap_sdk import Cloaker

    with Cloaker.from_pretrained() as c:
        yield c


def _encode(rgb, fmt, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, fmt, **kw)
    return buf.getvalue()


def _sdk(cloaker, data: bytes, fmt: str) -> bytes:
    from nullswap_sdk.imageio import encode_image, load_image

    img = load_image(data)
    return encode_image(cloaker.cloak(img.rgb), fmt, alpha=img.alpha, icc_profile=img.icc_profile)


def _post(client, data: bytes, ctype: str = "image/jpeg", query: str = "", **kw):
    return client.post(f"/v1/cloak{query}", content=data, headers={"Content-Type": ctype, **kw})


def test_health_ready_and_metrics(service):
    assert service.get("/healthz").json() == {"status": "ok"}
    ready = service.get("/readyz").json()
    assert ready["status"] == "ready" and ready["workers"] == 2
    metrics = service.get("/metrics")
    assert metrics.status_code == 200 and "nullswap_ready 1.0" in metrics.text
    assert 'nullswap_http_requests_total{route="/readyz",status="200"}' in metrics.text


def test_output_equals_the_sdk_and_metadata_is_stripped(service, cloaker, lfw_rgb):
    """JPEG in → JPEG out, byte-equal to the SDK; EXIF (with GPS) gone; report header per face."""
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"
    exif[0x8825] = {2: (48.0, 51.0, 24.0)}  # GPSInfo: latitude
    data = _encode(lfw_rgb, "JPEG", quality=92, exif=exif.tobytes())
    r = _post(service, data)
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert r.content == _sdk(cloaker, data, "JPEG")
    assert "exif" not in Image.open(io.BytesIO(r.content)).info
    faces = json.loads(r.headers["x-nullswap-report"])
    assert r.headers["x-nullswap-faces"] == "1" and len(faces) == 1 and faces[0]["psnr_crop"] > 30


def test_png_with_alpha_and_format_query(service, cloaker, lfw_rgb):
    rgba = np.dstack([lfw_rgb, np.full(lfw_rgb.shape[:2], 200, np.uint8)])
    data = _encode(rgba, "PNG")
    r = _post(service, data, "image/png")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.content == _sdk(cloaker, data, "PNG")
    r = _post(service, data, "image/png", "?format=webp&quality=90&strength=0.5")
    assert r.status_code == 200 and r.headers["content-type"] == "image/webp"
    assert json.loads(r.headers["x-nullswap-report"])[0]["strength"] == 0.5
    r = _post(service, data, "image/png", "?level=high")
    from nullswap_sdk.levels import LEVELS

    assert r.status_code == 200 and json.loads(r.headers["x-nullswap-report"])[0]["strength"] == LEVELS["high"].strength


def _animated_gif() -> bytes:
    frames = [Image.fromarray(np.full((32, 32, 3), v, np.uint8)) for v in (0, 255)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    return buf.getvalue()


@pytest.mark.parametrize("case, status", [
    ("corrupt", 400), ("truncated", 400), ("empty", 400), ("not-an-image", 400),
    ("wrong-content-type", 415), ("no-content-type", 415), ("oversize", 413), ("oversize-chunked", 413),
    ("bomb", 413), ("animated", 422), ("bad-strength", 422), ("bad-format", 422), ("bad-level", 422),
    ("level-and-strength", 422), ("no-such-route", 404),
    ("wrong-method", 405),
])
def test_bad_requests_get_4xx_json_with_a_hint(service, lfw_rgb, case, status):
    jpeg = _encode(lfw_rgb, "JPEG")
    big = jpeg + b"\0" * (2**20)
    requests = {
        "corrupt": lambda: _post(service, b"\xff\xd8\xff\xe0" + os.urandom(2000)),
        "truncated": lambda: _post(service, jpeg[: len(jpeg) // 2]),
        "empty": lambda: _post(service, b""),
        "not-an-image": lambda: _post(service, b"%PDF-1.7 hello", "image/png"),
        "wrong-content-type": lambda: _post(service, jpeg, "application/json"),
        "no-content-type": lambda: service.post("/v1/cloak", content=jpeg, headers={"Content-Type": ""}),
        "oversize": lambda: _post(service, big),
        "oversize-chunked": lambda: service.post("/v1/cloak", content=iter([big[:500_000], big[500_000:]]),
                                                 headers={"Content-Type": "image/jpeg"}),
        "bomb": lambda: _post(service, _png_bomb(20_000, 20_000), "image/png"),
        "animated": lambda: _post(service, _animated_gif(), "image/gif"),
        "bad-strength": lambda: _post(service, jpeg, query="?strength=9"),
        "bad-format": lambda: _post(service, jpeg, query="?format=gif"),
        "bad-level": lambda: _post(service, jpeg, query="?level=ultra"),
        "level-and-strength": lambda: _post(service, jpeg, query="?level=low&strength=1"),
        "no-such-route": lambda: service.get("/v2/nothing"),
        "wrong-method": lambda: service.get("/v1/cloak"),
    }
    r = requests[case]()
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error", "hint"} and body["error"] and body["hint"]
    assert "Traceback" not in r.text
    assert service.get("/readyz").status_code == 200  # still serving


def test_concurrent_clients_are_all_served(service, cloaker, lfw_rgb):
    data = _encode(lfw_rgb, "JPEG")
    expected = _sdk(cloaker, data, "JPEG")
    with ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(lambda _: _post(service, data), range(32)))
    assert [r.status_code for r in responses] == [200] * 32
    assert all(r.content == expected for r in responses)


def test_api_key_back_pressure_and_graceful_shutdown(lfw_rgb):
    """A key-protected server with one worker and no queue: wrong keys get 401 (constant-time
    compare), a burst gets 429 with Retry-After beside 200s, and a request in flight when the
    server is told to stop still gets its image."""
    photo = np.ascontiguousarray(np.tile(lfw_rgb, (6, 8, 1)))  # 2000x1500, 48 faces: slow enough
    data = _encode(photo, "JPEG")
    with _server(ServeConfig(workers=1, max_queue=0, max_pixels=10_000_000, max_upload_bytes=8 * 2**20,
                             api_key=KEY)) as (client, server):
        assert _post(client, data).status_code == 401
        assert _post(client, data, **{"X-API-Key": "k" * 23 + "x"}).status_code == 401
        assert _post(client, data, Authorization=f"Bearer {KEY}").status_code == 200
        assert client.get("/healthz").status_code == 200  # health needs no key

        barrier = threading.Barrier(6)

        def burst(_):
            barrier.wait()
            return _post(client, data, **{"X-API-Key": KEY})

        with ThreadPoolExecutor(6) as pool:
            codes = [r.status_code for r in pool.map(burst, range(6))]
        assert set(codes) <= {200, 429} and 200 in codes and 429 in codes, codes

        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(_post, client, data, **{"X-API-Key": KEY})
            end = time.monotonic() + 30
            while not _admitted(client) and time.monotonic() < end:
                time.sleep(0.005)
            server.should_exit = True
            assert pending.result().status_code == 200


def test_request_timeout_is_503_json(lfw_rgb):
    photo = np.ascontiguousarray(np.tile(lfw_rgb, (6, 8, 1)))  # ~0.3 s of work, 48 faces
    with _server(ServeConfig(workers=1, timeout_s=0.05, max_pixels=10_000_000,
                             max_upload_bytes=8 * 2**20)) as (client, _):
        r = _post(client, _encode(photo, "JPEG"))
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert set(r.json()) == {"error", "hint"} and "within 0.05 s" in r.json()["error"]
        assert client.get("/readyz").status_code == 200


def test_a_model_that_fails_to_load_is_reported_not_served(lfw_rgb):
    """Alive (/healthz 200) but never ready: /readyz and /v1/cloak answer 503 JSON with why."""
    import uvicorn

    from nullswap_sdk.serve.server import uvicorn_config

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn_config(ServeConfig(model="no-such-model"), "127.0.0.1",
                                           sock.getsockname()[1], log_level="critical"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{sock.getsockname()[1]}", timeout=30) as client:
            end = time.monotonic() + 30
            while time.monotonic() < end:
                try:
                    ready = client.get("/readyz")
                    if "failed to load" in ready.text:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.05)
            assert ready.status_code == 503 and "no-such-model" in ready.json()["error"]
            assert client.get("/healthz").status_code == 200
            r = _post(client, _encode(lfw_rgb, "JPEG"))
            assert r.status_code == 503 and "failed to load" in r.json()["error"]
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


def _admitted(client) -> bool:
    try:
        text = client.get("/metrics").text
    except httpx.TransportError:
        return False
    return "nullswap_requests_admitted 1.0" in text


def test_cli_serve_starts_and_stops_on_sigterm(tmp_path):
    """`nullswap serve` as a user runs it: ready, answers, shuts down cleanly on SIGTERM."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    proc = subprocess.Popen([sys.executable, "-m", "nullswap_sdk.cli", "serve", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            _wait_ready(client)
            assert client.get("/healthz").status_code == 200
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(30)
        log = proc.stdout.read().decode()
        # uvicorn shuts down gracefully, then re-raises SIGTERM for the process manager to see.
        assert rc in (0, -signal.SIGTERM), log
        assert "Application shutdown complete" in log and "Traceback" not in log, log
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.slow
def test_same_app_on_ray_serve(ray_cluster, cloaker, lfw_rgb):
    """The deployment `nullswap serve --ray` runs: same bytes as the SDK, same JSON errors."""
    from ray import serve

    from nullswap_sdk.serve.ray_serve import deployment

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        serve.run(deployment(ServeConfig(workers=1)).bind(), name="nullswap", route_prefix="/")
        data = _encode(lfw_rgb, "JPEG")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            _wait_ready(client)
            r = _post(client, data)
            assert r.status_code == 200 and r.content == _sdk(cloaker, data, "JPEG")
            bad = _post(client, b"junk")
            assert bad.status_code == 400 and set(bad.json()) == {"error", "hint"}
    finally:
        serve.shutdown()
