"""``lesionseg data download`` against a real HTTP server on 127.0.0.1 serving tiny archives in the
official layouts (the network boundary is the only thing replaced: nothing here reaches the internet)."""
from __future__ import annotations

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import pytest

from lesionseg.cli.main import main
from lesionseg.data.prepare.download import BASE_URL_ENV, DATASETS, Archive, DownloadError, archives, \
    download_archive
from official_layouts import isic2018_members, write_zip


class Server:
    """Files by name, with ``Range`` support; ``cut_once``: names whose first response stops
    halfway (announcing the full length); ``ignore_range``: answer every request with the whole file."""

    def __init__(self, files: dict[str, bytes]):
        self.files, self.cut_once, self.ignore_range = files, set(), False
        self.requests: list[tuple[str, str | None]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                name = self.path.lstrip("/")
                rng = self.headers.get("Range")
                outer.requests.append((name, rng))
                data = outer.files.get(name)
                if data is None:
                    self.send_error(404, "Not Found")
                    return
                start = 0
                if rng and not outer.ignore_range:
                    start = int(rng.split("=")[1].split("-")[0])
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if name in outer.cut_once:
                    outer.cut_once.discard(name)
                    self.wfile.write(body[: len(body) // 2])
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "Server":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def isic2018_files(tmp_path: Path) -> dict[str, bytes]:
    """The ISIC 2018 Task 1 training archives, tiny, as the server holds them."""
    members = isic2018_members("Training")
    return {name: write_zip(tmp_path / "served" / name, m).read_bytes() for name, m in members.items()}


@pytest.fixture
def server(isic2018_files: dict[str, bytes]) -> Iterator[Server]:
    with Server(dict(isic2018_files)) as s:
        yield s


def test_download_then_prepare_and_a_second_download_fetches_nothing(server: Server, isic2018_files, tmp_path: Path,
                                                                        capsys) -> None:
    dl = tmp_path / "dl"
    assert main(["data", "download", "isic2018", "--to", str(dl), "--base-url", server.url]) == 0
    for name, data in isic2018_files.items():
        assert (dl / name).read_bytes() == data
    assert not list(dl.glob("*.part"))
    assert "next: lesionseg data prepare --source" in capsys.readouterr().out
    assert main(["data", "prepare", "--source", str(dl), "--output", str(tmp_path / "out"), "--size", "64"]) == 0
    assert len((tmp_path / "out/ids.txt").read_text().split()) == 3
    served = len(server.requests)
    assert main(["data", "download", "isic2018", "--to", str(dl), "--base-url", server.url]) == 0
    assert len(server.requests) == served  # already there: no request at all


def test_a_dropped_connection_is_resumed_with_a_range_request(server: Server, isic2018_files, tmp_path: Path,
                                                              monkeypatch) -> None:
    name = "ISIC2018_Task1_Training_GroundTruth.zip"
    server.cut_once.add(name)
    monkeypatch.setenv(BASE_URL_ENV, server.url)  # the environment variable instead of --base-url
    assert main(["data", "download", "isic2018", "--to", str(tmp_path)]) == 0
    assert (tmp_path / name).read_bytes() == isic2018_files[name]
    ranges = [r for n, r in server.requests if n == name]
    half = len(isic2018_files[name]) // 2
    assert ranges == [None, f"bytes={half}-"]


def test_a_part_file_is_continued_and_a_server_ignoring_ranges_restarts(server: Server, isic2018_files,
                                                                        tmp_path: Path) -> None:
    name = "ISIC2018_Task1-2_Training_Input.zip"
    data = isic2018_files[name]
    (tmp_path / f"{name}.part").write_bytes(data[:100])
    archive = Archive(name, f"{server.url}/{name}", sha256=hashlib.sha256(data).hexdigest())
    assert download_archive(archive, tmp_path).read_bytes() == data
    assert server.requests == [(name, "bytes=100-")]
    # a server that answers a range request with the whole file: the part is started again
    (tmp_path / name).unlink()
    (tmp_path / f"{name}.part").write_bytes(b"junk" * 10)
    server.ignore_range = True
    assert download_archive(archive, tmp_path).read_bytes() == data
    # a part that is already complete (416 for the range after its end) is only renamed
    server.ignore_range = False
    (tmp_path / name).rename(tmp_path / f"{name}.part")
    assert download_archive(archive, tmp_path).read_bytes() == data
    assert server.requests[-1] == (name, f"bytes={len(data)}-")


def test_checksum_and_size_mismatches_are_refused_and_nothing_is_kept(server: Server, tmp_path: Path) -> None:
    name = "ISIC2018_Task1-2_Training_Input.zip"
    url = f"{server.url}/{name}"
    dl = tmp_path / "dl"
    with pytest.raises(DownloadError, match="SHA-256 .* does not match"):
        download_archive(Archive(name, url, sha256="0" * 64), dl)
    with pytest.raises(DownloadError, match="announces .* bytes, expected 12345"):
        download_archive(Archive(name, url, size=12345), dl)
    assert list(dl.iterdir()) == []


def test_server_down_gives_one_clear_line_and_tries_no_more(tmp_path: Path, capsys) -> None:
    with Server({}) as s:  # a port that is certainly closed once the server is gone
        url = s.url
    code = main(["data", "download", "isic2018", "--to", str(tmp_path / "dl"), "--base-url", url])
    err = capsys.readouterr().err.splitlines()
    assert code == 1
    first = [line for line in err if line.startswith("lesionseg: error: ")]
    assert len(first) == 1
    assert f"cannot reach {url}/ISIC2018_Task1-2_Training_Input.zip" in first[0]
    assert "download it by hand" in first[0] and "lesionseg data prepare --source" in first[0]
    assert any("not tried: ISIC2018_Task1_Training_GroundTruth.zip" in line for line in err)
    assert not list((tmp_path / "dl").iterdir())


def test_a_missing_file_is_named_and_the_others_are_fetched(server: Server, tmp_path: Path, capsys) -> None:
    del server.files["ISIC2018_Task1_Training_GroundTruth.zip"]
    code = main(["data", "download", "isic2018", "--to", str(tmp_path), "--base-url", server.url])
    assert code == 1
    assert "ISIC2018_Task1_Training_GroundTruth.zip: HTTP 404" in capsys.readouterr().err
    assert (tmp_path / "ISIC2018_Task1-2_Training_Input.zip").is_file()


def test_the_table_of_official_archives() -> None:
    for dataset, table in DATASETS.items():
        names = [a.name for a in table]
        assert len(set(names)) == len(names) and all(n.endswith(".zip") for n in names)
        assert all(a.url.startswith("https://") for a in table)
        assert [a.name for a in archives(dataset)], dataset  # every dataset has a training part
    isic = [a for d in ("isic2016", "isic2017", "isic2018") for a in DATASETS[d]]
    assert all(a.url == f"https://isic-challenge-data.s3.amazonaws.com/{a.url.split('/')[-2]}/{a.name}" for a in isic)
    assert [a.name for a in archives("isic2018", ("training",))] == [
        "ISIC2018_Task1-2_Training_Input.zip", "ISIC2018_Task1_Training_GroundTruth.zip"]
    assert len(archives("isic2018", ("training", "validation", "test"))) == 6
    moved = archives("isic2017", base_url="http://mirror/x/")
    assert moved[0].url == "http://mirror/x/ISIC-2017_Training_Data.zip"
