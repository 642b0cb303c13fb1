"""Multipart uploads and identity references on the HTTP service, on a real uvicorn server:
``POST /v1/reference`` must return the SDK's reference, ``POST /v1/cloak`` with it the SDK's
bytes, and every misuse a 4xx JSON with a hint (the network takes no reference, level max is
only where the service runs it, malformed forms, foreign .npz files)."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("prometheus_client")
pytest.importorskip("python_multipart")
httpx = pytest.importorskip("httpx")

from .conftest import data_path  # noqa: E402
from .test_serve import _encode, _post, _server  # noqa: E402
from nullswap_sdk.cloakers.reference import IdentityReference  # noqa: E402
from nullswap_sdk.errors import ModelNotFoundError  # noqa: E402
from nullswap_sdk.serve import ServeConfig  # noqa: E402

# Level max's model with one surrogate and two steps: the service's plumbing, not the
# protection (the lab measures that).
CHEAP_MAX = {"steps": 2, "recognisers": ("sface",)}


def _unit(n: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=n)
    return (v / np.linalg.norm(v)).astype(np.float32)


def _powell() -> list[bytes]:
    root = data_path("lfw", "Colin_Powell")
    return [(root / f"Colin_Powell_000{i}.jpg").read_bytes() for i in (2, 3, 1)]


@pytest.fixture(scope="module")
def network_service():
    with _server(ServeConfig(workers=1, max_upload_bytes=2**20, max_pixels=4_000_000)) as (c, _):
        yield c


@pytest.fixture(scope="module")
def max_service():
    from nullswap_sdk import Cloaker

    try:  # the surrogate ships in a registry package; skip cleanly where it is absent
        Cloaker.from_pretrained(level="max", **CHEAP_MAX).close()
    except ModelNotFoundError as e:
        pytest.skip(e.message)
    with _server(ServeConfig(level="max", overrides=CHEAP_MAX, workers=1, max_reference_photos=3,
                             max_upload_bytes=2**20, timeout_s=120)) as (c, _):
        yield c


@pytest.fixture(scope="module")
def max_cloaker():
    from nullswap_sdk import Cloaker

    with Cloaker.from_pretrained(level="max", **CHEAP_MAX) as c:
        yield c


def _form(client, route: str, files, query: str = ""):
    return client.post(f"{route}{query}", files=files)


def test_multipart_image_equals_the_raw_upload(network_service, lfw_rgb):
    jpeg = _encode(lfw_rgb, "JPEG", quality=92)
    raw = _post(network_service, jpeg)
    form = _form(network_service, "/v1/cloak", {"image": ("photo.jpg", jpeg, "application/octet-stream")})
    assert raw.status_code == form.status_code == 200
    assert form.content == raw.content and form.headers["content-type"] == "image/jpeg"
    assert json.loads(form.headers["x-nullswap-report"])[0]["reference"] is False
    assert network_service.get("/readyz").json()["references"] is False


def test_reference_and_cloak_equal_the_sdk(max_service, max_cloaker):
    from nullswap_sdk.imageio import encode_image, load_image

    powell = _powell()
    ready = max_service.get("/readyz").json()
    assert ready["level"] == "max" and ready["references"] is True
    blank = _encode(np.full((200, 200, 3), 128, np.uint8), "PNG")  # no face: left out, not an error
    r = _form(max_service, "/v1/reference", [("photo", ("a.jpg", powell[0])), ("photo", ("b.jpg", powell[1])),
                                             ("photo", ("c.png", blank))])
    assert r.status_code == 200, r.text
    assert r.headers["x-nullswap-photos"] == "2" and r.headers["content-type"] == "application/octet-stream"
    got = IdentityReference.from_bytes(r.content)
    want = max_cloaker.reference([load_image(p).rgb for p in powell[:2]])
    assert got.photos == 2 and sorted(got.embeddings) == ["sface"]
    np.testing.assert_allclose(got.embeddings["sface"], want.embeddings["sface"], atol=1e-5)

    c = _form(max_service, "/v1/cloak", {"image": ("p.jpg", powell[2]), "reference": ("me.npz", r.content)},
              query="?level=max")
    assert c.status_code == 200, c.text
    faces = json.loads(c.headers["x-nullswap-report"])
    assert len(faces) == 1 and faces[0]["reference"] is True
    img = load_image(powell[2])
    out = max_cloaker.cloak(img.rgb, reference=got)
    assert c.content == encode_image(out, "JPEG", quality=95, icc_profile=img.icc_profile)
    plain = _post(max_service, powell[2])  # no reference: a different optimum
    assert plain.status_code == 200 and plain.content != c.content
    assert json.loads(plain.headers["x-nullswap-report"])[0]["reference"] is False


def _assert_refused(service, r, status: int, says: str) -> None:
    """A 4xx JSON error naming ``says``, with a hint and no trace; the service still ready."""
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error", "hint"} and says in body["error"] and body["hint"], body
    assert "Traceback" not in r.text
    assert service.get("/readyz").status_code == 200


def _multipart(client, route: str, body: bytes):
    """A hand-written multipart body (boundary B), for what httpx would not send."""
    return client.post(route, content=body, headers={"Content-Type": "multipart/form-data; boundary=B"})


def _npz(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _zip_bomb() -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, names=np.array(["sface"]), photos=np.array(2), e_sface=np.zeros(2**22, np.float32))
    return buf.getvalue()  # ~16 KB on the wire, 16 MB inflated


@pytest.mark.parametrize("case, status, says", [
    ("level-max-on-network", 422, "runs pgd"),
    ("reference-on-network", 422, "does not take identity references"),
    ("reference-route-on-network", 422, "does not take identity references"),
    ("no-image-part", 400, "no 'image' part"),
    ("unknown-part", 400, "unknown form part 'picture'"),
    ("two-images", 400, "more than 1 'image'"),
    ("text-field", 400, "text field"),
    ("malformed", 400, "malformed multipart"),
    ("reference-not-multipart", 415, "not multipart/form-data"),
])
def test_misuse_on_a_network_service_is_4xx(network_service, lfw_rgb, case, status, says):
    jpeg = _encode(lfw_rgb, "JPEG")
    ref = IdentityReference({"sface": _unit(128, 0)}, photos=2).to_bytes()
    s = network_service
    requests = {
        "level-max-on-network": lambda: _post(s, jpeg, query="?level=max"),
        "reference-on-network": lambda: _form(s, "/v1/cloak", {"image": ("a.jpg", jpeg), "reference": ("r.npz", ref)}),
        "reference-route-on-network": lambda: _form(s, "/v1/reference", [("photo", ("a.jpg", jpeg))] * 2),
        "no-image-part": lambda: _form(s, "/v1/cloak", {"reference": ("r.npz", ref)}),
        "unknown-part": lambda: _form(s, "/v1/cloak", {"picture": ("a.jpg", jpeg)}),
        "two-images": lambda: _form(s, "/v1/cloak", [("image", ("a.jpg", jpeg))] * 2),
        "text-field": lambda: _multipart(s, "/v1/cloak", b'--B\r\nContent-Disposition: form-data; name="image"'
                                                          b'\r\n\r\nhello\r\n--B--\r\n'),
        "malformed": lambda: s.post("/v1/cloak", content=b"--X\r\ngarbage",
                                    headers={"Content-Type": "multipart/form-data"}),
        "reference-not-multipart": lambda: s.post("/v1/reference", content=jpeg, headers={"Content-Type": "image/jpeg"}),
    }
    _assert_refused(s, requests[case](), status, says)


@pytest.mark.parametrize("case, status, says", [
    ("network-level", 422, "runs the network"),
    ("foreign-npz", 422, "not an identity reference"),
    ("zip-bomb", 422, "more than any identity reference"),
    ("other-surrogates", 422, "was built for ['facenet']"),
    ("wrong-size", 422, "has 64 values"),
    ("no-face-in-any-photo", 400, "no face found"),
    ("too-many-photos", 400, "malformed multipart"),
    ("no-photo-part", 400, "no 'photo' part"),
])
def test_misuse_on_a_level_max_service_is_4xx(max_service, case, status, says):
    jpeg = _powell()[0]
    blank = _encode(np.full((120, 120, 3), 90, np.uint8), "PNG")
    s = max_service

    def cloak_with(ref: bytes):
        return _form(s, "/v1/cloak", {"image": ("a.jpg", jpeg), "reference": ("r.npz", ref)})

    requests = {
        "network-level": lambda: _post(s, jpeg, query="?level=mid"),
        "foreign-npz": lambda: cloak_with(_npz(weights=np.zeros(3))),
        "zip-bomb": lambda: cloak_with(_zip_bomb()),
        "other-surrogates": lambda: cloak_with(IdentityReference({"facenet": _unit(512, 1)}, photos=2).to_bytes()),
        "wrong-size": lambda: cloak_with(IdentityReference({"sface": _unit(64, 2)}, photos=2).to_bytes()),
        "no-face-in-any-photo": lambda: _form(s, "/v1/reference", [("photo", ("a.png", blank))] * 2),
        "too-many-photos": lambda: _form(s, "/v1/reference", [("photo", ("a.jpg", jpeg))] * 4),
        "no-photo-part": lambda: _multipart(s, "/v1/reference", b"--B--\r\n"),
    }
    _assert_refused(s, requests[case](), status, says)


def test_cli_serve_level_max_checks_its_model_before_serving(caplog):
    from nullswap_sdk.cli import main

    assert main(["serve", "--level", "max", "--model", "noise", "--port", "1"]) == 2
    assert "level 'max' runs model 'pgd'" in caplog.text
