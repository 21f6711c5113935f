"""The running app under attack: no file outside its uploads is served, no unsafe ZIP is opened.

Every file route Gradio exposes (``/file=``, ``/gradio_api/file=``, ``/file/``, static, assets,
svelte, custom-component, stream and run-history routes) is asked for ``/etc/passwd``, the app's
own source and its weights, plainly, with ``../`` and URL-encoded traversal, and the API's
endpoints get crafted file payloads that point at the same files. No answer may contain a byte
of them. ZIPs with traversal, absolute, symlink members or bombs are refused with a message.
Login, flagging and sharing: see the last tests.
"""
from __future__ import annotations

import http.client
import io
import json
import stat
import uuid
import zipfile
from pathlib import Path
from urllib.parse import quote

import pytest
from packaging.version import Version

from app_server import REPO_ROOT, AppServer
from bad_inputs import GOOD, build_images

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

PASSWD = Path("/etc/passwd")
SOURCE = REPO_ROOT / "app.py"
WEIGHTS = REPO_ROOT / "weights" / "model.safetensors"
TARGETS = [p for p in (PASSWD, SOURCE, WEIGHTS, REPO_ROOT / "lesionseg" / "ui" / "launch.py") if p.is_file()]


def marker(path: Path) -> bytes:
    """Bytes that appear in ``path`` and would appear in any response that leaked it."""
    data = path.read_bytes()
    if path == PASSWD:
        return data.splitlines()[0][:40]
    return data[:48] if path.suffix == ".safetensors" else data[200:260]


def request(port: int, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
            timeout: float = 120) -> tuple[int, bytes]:
    """One raw HTTP request; ``path`` is sent exactly as given (no normalisation)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def path_variants(target: Path) -> list[str]:
    """Spellings of ``target`` an attacker would try in a URL path."""
    abs_ = str(target)
    rel = target.relative_to(REPO_ROOT).as_posix() if REPO_ROOT in target.parents else abs_.lstrip("/")
    up = abs_.lstrip("/")
    return [abs_, rel, "../" * 12 + up, "..%2f" * 12 + up.replace("/", "%2f"), "%2e%2e%2f" * 12 + up,
            "%2e%2e/" * 12 + up, "%252e%252e%252f" * 12 + up, "..\\" * 12 + up.replace("/", "\\"),
            "....//" * 12 + up, quote(abs_, safe=""), "/" + abs_, "./" + rel, rel + "%00.png"]


ROUTES = ["/file={p}", "/gradio_api/file={p}", "/file/{p}", "/gradio_api/file/{p}", "/static/{p}", "/assets/{p}",
          "/svelte/{p}", "/gradio_api/static/{p}", "/gradio_api/assets/{p}",
          "/gradio_api/custom_component/x/client/{p}/f.js", "/gradio_api/run-history/records/x/y/assets/{p}",
          "/gradio_api/stream/x/0/0/{p}", "/gradio_api/proxy={p}", "/{p}"]


@pytest.fixture(scope="module")
def server(tiny_app_server):
    return tiny_app_server  # the suite's shared tiny-model server (conftest.py)


def test_gradio_has_the_path_traversal_fixes() -> None:
    """CVE-2023-51449 (file route traversal) and the FileExplorer traversal are fixed by 6.16.0."""
    import gradio

    assert Version(gradio.__version__) >= Version("6.16.0"), gradio.__version__


@pytest.mark.parametrize("target", TARGETS, ids=lambda p: p.name)
def test_file_routes_refuse_files_outside_the_uploads(server, target: Path) -> None:
    leak = marker(target)
    served = []
    for route in ROUTES:
        for variant in path_variants(target):
            for method in ("GET", "HEAD"):
                status, body = request(server.port, method, route.replace("{p}", variant))
                if leak in body:
                    served.append(f"{method} {route.replace('{p}', variant)} -> {status}")
                # gradio's proxy route answers a NUL byte with a bare 500: no content, no traceback
                assert b"Traceback" not in body and b'File "' not in body, (route, variant)
    assert not served, "file content returned by:\n" + "\n".join(served)


def test_file_route_does_not_fetch_loopback_urls(server) -> None:
    """/file=http://127.0.0.1/... must not make the server fetch its own (or any private) address."""
    for url in (f"http://127.0.0.1:{server.port}/gradio_api/file={PASSWD}", "http://169.254.169.254/latest/meta-data/",
                f"http://localhost:{server.port}/config"):
        status, body = request(server.port, "GET", f"/gradio_api/file={url}")
        assert marker(PASSWD) not in body and b'"components"' not in body, (url, status)


def call(port: int, api: str, data: list) -> tuple[str, str]:
    """POST /gradio_api/call/<api> then read its event stream; (last event name, all text)."""
    status, body = request(port, "POST", f"/gradio_api/call/{api}", json.dumps({"data": data}).encode(),
                           {"Content-Type": "application/json"})
    if status != 200:
        return f"http {status}", body.decode(errors="replace")
    event_id = json.loads(body)["event_id"]
    status, stream = request(port, "GET", f"/gradio_api/call/{api}/{event_id}", timeout=300)
    text = stream.decode(errors="replace")
    events = [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("event:")]
    return (events[-1] if events else f"http {status}"), text


def file_payloads(target: Path, port: int) -> list[dict]:
    meta = {"_type": "gradio.FileData"}
    return [
        {"path": str(target), "meta": meta},
        {"path": str(target), "orig_name": "photo.jpg", "meta": meta},
        {"path": "../" * 12 + str(target).lstrip("/"), "meta": meta},
        {"path": target.name, "url": f"file://{target}", "meta": meta},
        {"path": f"http://127.0.0.1:{port}/gradio_api/file={target}", "meta": meta},
    ]


@pytest.mark.parametrize("target", TARGETS, ids=lambda p: p.name)
def test_crafted_api_payloads_cannot_read_server_files(server, target: Path) -> None:
    leak = marker(target).decode(errors="replace")
    for payload in file_payloads(target, server.port):
        for api, data in (("segment", [payload, 0.5, None]), ("batch", [None, [payload], "Balanced"]),
                          ("batch", [[payload], None, "Balanced"])):
            event, text = call(server.port, api, data)
            assert leak not in text, (api, payload)
            assert event in ("error", "http 422", "http 400", "http 403"), (api, payload, text[-500:])
            assert "Traceback" not in text


# -- ZIP uploads to the batch endpoint ----------------------------------------------------------

def _zip(members: list[tuple[str, bytes | int]], symlink: str | None = None, deflate: bool = True) -> bytes:
    """A ZIP of ``(name, data)`` members; an int ``data`` is that many zero bytes, streamed."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED) as zf:
        for name, data in members:
            if isinstance(data, int):
                info = zipfile.ZipInfo(name)
                info.compress_type = zipfile.ZIP_DEFLATED
                with zf.open(info, "w", force_zip64=True) as f:
                    for _ in range(data // 2 ** 20):
                        f.write(bytes(2 ** 20))
            else:
                zf.writestr(name, data)
        if symlink:
            info = zipfile.ZipInfo("link.jpg")
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, symlink)
    return buf.getvalue()


def test_unsafe_zips_are_refused_and_the_rest_is_processed(server, tmp_path: Path) -> None:
    from gradio_client import Client, handle_file

    good = build_images(tmp_path / "img", cases=[], with_good=True)["good"]
    jpg = good.read_bytes()
    escape = REPO_ROOT.parent / f"lesionseg-escape-{uuid.uuid4().hex[:8]}.jpg"
    zips = {
        "traversal.zip": (_zip([("ok.jpg", jpg), ("../../../../" + str(escape).lstrip("/"), jpg)]), "outside"),
        "absolute.zip": (_zip([(str(escape), jpg)]), "absolute path"),
        "symlink.zip": (_zip([("ok.jpg", jpg)], symlink="/etc/passwd"), "symbolic link"),
        "bomb.zip": (_zip([("big.jpg", 300 * 2 ** 20)]), "MB"),
        "ratio_bomb.zip": (_zip([("big.jpg", 20 * 2 ** 20)]), "zip bomb"),
        "many.zip": (_zip([(f"f{i}.jpg", b"x") for i in range(2001)], deflate=False), "more than 2000 files"),
    }
    for name, (data, _) in zips.items():
        (tmp_path / name).write_bytes(data)
    client = Client(server.url, verbose=False)
    files = [handle_file(tmp_path / n) for n in zips] + [handle_file(good)]
    gallery, table, zip_path, status = client.predict(None, files, "Balanced", api_name="/batch")
    rows = {r[0]: r[-1] for r in table["data"]}
    for name, (_, reason) in zips.items():
        assert name in rows and "refused" in rows[name] and reason in rows[name], (name, rows.get(name))
        assert "\n" not in rows[name] and "Traceback" not in rows[name]
    assert rows[GOOD.filename] == "ok" and len(gallery) == 1
    assert not escape.exists() and not Path(str(escape)).exists()
    with zipfile.ZipFile(zip_path) as zf:
        assert all(not n.startswith(("/", "..")) and "passwd" not in n for n in zf.namelist())


def test_upload_filename_cannot_escape_the_upload_folder(server) -> None:
    name = f"lesionseg-upload-escape-{uuid.uuid4().hex[:8]}.jpg"
    target = Path("/tmp") / name
    boundary = "lesionsegboundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"../../../../../../tmp/{name}\"\r\n"
            f"Content-Type: image/jpeg\r\n\r\n").encode() + b"not really a jpeg" + f"\r\n--{boundary}--\r\n".encode()
    status, resp = request(server.port, "POST", "/gradio_api/upload", body,
                           {"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert not target.exists()
    if status == 200:
        for p in json.loads(resp):
            assert ".." not in Path(p).parts and Path(p).resolve() != target


# -- login, flagging, sharing -----------------------------------------------------------------------

def test_auth_protects_every_api_route(tiny_model_dir: Path, tmp_path: Path) -> None:
    from gradio_client import Client, handle_file

    good = build_images(tmp_path, cases=[], with_good=True)["good"]
    with AppServer("--threads", "1", "--weights", str(tiny_model_dir), "--auth", "ann:s3cret-pw") as s:
        for method, path, body in [("GET", "/gradio_api/info", None), ("GET", "/config", None),
                                   ("POST", "/gradio_api/upload", b""), ("POST", "/gradio_api/call/segment",
                                                                         b'{"data": [null, 0.5, null]}'),
                                   ("POST", "/gradio_api/queue/join", b"{}"), ("GET", f"/gradio_api/file={good}", None)]:
            status, _ = request(s.port, method, path, body, {"Content-Type": "application/json"})
            assert status in (401, 403), (method, path, status)
        with pytest.raises(Exception):
            Client(s.url, verbose=False)
        with pytest.raises(Exception):
            Client(s.url, auth=("ann", "wrong"), verbose=False)
        client = Client(s.url, auth=("ann", "s3cret-pw"), verbose=False)
        assert "64×48" in client.predict(handle_file(good), 0.5, None, api_name="/segment")[5]


def test_no_flagging_and_no_share_link(server) -> None:
    status, body = request(server.port, "GET", "/config")
    assert status == 200
    config = json.loads(body)
    labels = {str(c.get("props", {}).get("value", "")) for c in config.get("components", [])}
    assert not {"Flag", "Flagging"} & labels and not config.get("share_url")
    assert "public URL" not in server.log and "gradio.live" not in server.log
    assert not (REPO_ROOT / ".gradio" / "flagged").exists() or not any((REPO_ROOT / ".gradio" / "flagged").iterdir())
