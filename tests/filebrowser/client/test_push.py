"""The Pusher and Puller in-process against a real ``atelier serve``: what the progress
callback hears across a server restart, and the buffered download loop."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from atelier_io.http import Client
from filebrowser.client.pull import Puller
from filebrowser.client.push import Pusher
from filebrowser.client.transfers import ResumeStore, Retry

from ..transfers.conftest import sha256
from .test_cli import partial_size, wait_for

MiB = 1024 * 1024


def client_for(srv) -> Client:  # type: ignore[no-untyped-def]
    token = srv.session().headers["Authorization"]
    return Client(srv.url, headers={"Authorization": token})


def test_progress_adds_up_across_a_server_restart(spawn_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    srv = spawn_server()
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(20 * MiB))
    heard: list[int] = []
    result: list[object] = []
    pusher = Pusher(client_for(srv), ResumeStore(tmp_path / "resume.json"),
                    retry=Retry(attempts=20, first=0.2, cap=1), rate=4 * MiB)
    t = threading.Thread(target=lambda: result.append(
        pusher.push(src, "users", "big.bin", heard.append)))
    t.start()
    wait_for(lambda: partial_size(srv.root / "users") >= 8 * MiB)
    srv.kill9()
    srv = spawn_server(root=srv.root, state=srv.state, port=srv.port)
    t.join(120)
    assert result and sha256(srv.root / "users" / "big.bin") == sha256(src)
    assert sum(heard) == src.stat().st_size  # sent-then-lost bytes are taken back
    assert min(heard) < 0 or sum(h for h in heard if h > 0) == src.stat().st_size


def test_the_buffered_download_loop(server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The buffered download loop, in-process: every byte, progress adding up."""
    data = os.urandom(3 * MiB + 5)
    (server.root / "outputs" / "x.bin").write_bytes(data)
    puller = Puller(client_for(server), ResumeStore(tmp_path / "resume.json"))
    heard: list[int] = []
    r = puller.pull("outputs/x.bin", None, tmp_path / "x.bin", progress=heard.append)
    assert (tmp_path / "x.bin").read_bytes() == data
    assert r.size == len(data) and sum(heard) == len(data)


def test_an_upload_started_with_blake3_resumes_and_verifies_with_blake3(  # type: ignore[no-untyped-def]
        server, tmp_path: Path) -> None:
    """An upload begun by a client of the blake3 days (its checksum is in the upload's
    metadata) goes on with blake3: the server keeps hashing what it announced."""
    import base64

    import blake3

    data = os.urandom(5 * MiB + 11)
    src = tmp_path / "old.bin"
    src.write_bytes(data)
    client = client_for(server)
    meta = ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in
                    (("filename", "old.bin"), ("folder", "users"), ("conflict", "fail"),
                     ("checksum", "blake3")))
    tus = {"Tus-Resumable": "1.0.0"}
    r = client.post("/api/tus/", headers={**tus, "Upload-Length": str(len(data)),
                                          "Upload-Metadata": meta})
    assert r.status == 201
    url = server.url + r.headers["Location"]
    r = client.patch(url, body=data[:2 * MiB], headers={
        **tus, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"})
    assert r.status == 204
    store = ResumeStore(tmp_path / "resume.json")
    pusher = Pusher(client_for(server), store)
    store.set(pusher._key(src, "users", "old.bin"), url)  # what the old client left
    result = pusher.push(src, "users", "old.bin")
    assert result.resumed_from == 2 * MiB
    assert (server.root / "users" / "old.bin").read_bytes() == data
    want = f"blake3 {base64.b64encode(blake3.blake3(data).digest()).decode()}"
    assert client.head(url, headers=tus).headers["X-Atelier-File-Checksum"] == want
