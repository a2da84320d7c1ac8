"""common/download.py against a real HTTP server on 127.0.0.1 that injects faults. No network, about a second;
no verdict depends on the machine's speed (a barrier, not a delay, makes requests overlap).

.venv/bin/pytest tests/test_download.py
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import socket
import subprocess
import sys
import threading
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from common import download as dl
from common.download import DownloadError, RemoteFile

FAST = dict(backoff=0.01, progress=False)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Hub:
    """What the fake server serves, the faults it injects, and the requests it saw."""

    def __init__(self, base: str):
        self.base = base
        self.files: dict[str, bytes] = {}
        self.headers: dict[str, dict[str, str]] = defaultdict(dict)  # extra response headers per path
        self.redirects: dict[str, tuple[str, dict[str, str]]] = {}  # path -> (target path, 302 headers)
        # Consumed one per request: a status, (status, headers), or "drop" (half the body, then close).
        self.faults: dict[str, list] = defaultdict(list)
        self.ignore_range: set[str] = set()
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.gate: threading.Barrier | None = None  # requests wait here until `parties` of them are in flight
        self.inflight = self.max_inflight = 0
        self.lock = threading.Lock()

    def add(self, path: str, data: bytes, **headers: str) -> str:
        self.files[path] = data
        self.headers[path].update({k.replace("_", "-"): v for k, v in headers.items()})
        return self.base + path

    def seen(self, path: str) -> list[dict[str, str]]:
        return [h for p, h in self.requests if p == path]


class Handler(BaseHTTPRequestHandler):
    # HTTP/1.0 (the default): the connection closes after each response, so "drop" truncates the body.
    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        hub: Hub = self.server.hub  # type: ignore[attr-defined]
        path = self.path
        with hub.lock:
            hub.requests.append((path, {k.lower(): v for k, v in self.headers.items()}))
            fault = hub.faults[path].pop(0) if hub.faults[path] else None
            hub.inflight += 1
            hub.max_inflight = max(hub.max_inflight, hub.inflight)
        if hub.gate is not None:
            try:
                hub.gate.wait()
            except threading.BrokenBarrierError:
                fault = 503  # too few requests ever overlapped: the test sees the retries and fails
        # Out of flight before any byte of the reply: a client can only send its next request after this.
        with hub.lock:
            hub.inflight -= 1
        self._serve(hub, path, fault)

    def _serve(self, hub: Hub, path: str, fault) -> None:
        if isinstance(fault, (int, tuple)):
            code, headers = fault if isinstance(fault, tuple) else (fault, {})
            return self._reply(code, b"injected fault", headers)
        if path in hub.redirects:
            target, headers = hub.redirects[path]
            return self._reply(302, b"", {"Location": hub.base + target, **headers})
        if path not in hub.files:
            return self._reply(404, b"no such file")
        data, headers = hub.files[path], dict(hub.headers[path])
        m = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
        if m and path not in hub.ignore_range:
            start = int(m.group(1))
            if start >= len(data):
                return self._reply(416, b"", {"Content-Range": f"bytes */{len(data)}"})
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
            self._reply(206, data[start:], headers, drop=fault == "drop")
        else:
            self._reply(200, data, headers, drop=fault == "drop")

    def _reply(
        self, code: int, body: bytes, headers: dict[str, str] | None = None, drop: bool = False
    ) -> None:
        self.send_response(code)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2] if drop else body)


@pytest.fixture
def hub(monkeypatch):
    monkeypatch.setenv("no_proxy", "*")  # a proxy configured on the host must not see 127.0.0.1
    monkeypatch.setenv("NO_PROXY", "*")
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.hub = Hub(f"http://127.0.0.1:{server.server_address[1]}")  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)  # quick shutdown
    thread.start()
    yield server.hub  # type: ignore[attr-defined]
    server.shutdown()
    server.server_close()


def remote(hub: Hub, tmp_path: Path, name: str, data: bytes, sha256: str | None = None, **headers: str):
    return RemoteFile(hub.add(f"/{name}", data, **headers), tmp_path / name, sha256)


def test_parallel_download_records_sha256(hub, tmp_path, capsys):
    # Six files, three workers: requests pass the gate three at a time, so three are in flight at once however
    # fast the machine, and never more (a serial download breaks the barrier and fails).
    hub.gate = threading.Barrier(3, timeout=10)
    payloads = {f"f{i}.bin": os.urandom(50_000 + i) for i in range(6)}
    files = [remote(hub, tmp_path / "out", name, data) for name, data in payloads.items()]
    result = dl.download_all(files, workers=3, retries=0, backoff=0.01, progress=True)
    assert result == {tmp_path / "out" / n: sha(d) for n, d in payloads.items()}
    for name, data in payloads.items():
        assert (tmp_path / "out" / name).read_bytes() == data
    assert not list((tmp_path / "out").glob("*.part"))
    assert hub.max_inflight == 3 and len(hub.requests) == 6
    err = capsys.readouterr().err
    assert "] f0.bin (0.1 MB)" in err and "done: 6/6 files" in err


def test_server_errors_are_retried(hub, tmp_path):
    a = remote(hub, tmp_path, "a.bin", b"a" * 1000)
    b = remote(hub, tmp_path, "b.bin", b"b" * 1000)
    hub.faults["/a.bin"] = [500, 503]
    hub.faults["/b.bin"] = [(429, {"Retry-After": "0"}), 408]
    result = dl.download_all([a, b], **FAST)
    assert result == {a.dest: sha(b"a" * 1000), b.dest: sha(b"b" * 1000)}
    assert len(hub.seen("/a.bin")) == 3 and len(hub.seen("/b.bin")) == 3


def test_404_fails_fast_with_clear_message(hub, tmp_path, monkeypatch):
    missing = RemoteFile(hub.base + "/nope.parquet", tmp_path / "nope.parquet")
    sleeps = []  # every backoff goes through _sleep: a retry would record one here
    monkeypatch.setattr(dl, "_sleep", lambda seconds, cancel: sleeps.append(seconds))
    with pytest.raises(DownloadError) as exc:
        dl.download_all([missing], retries=5, backoff=1.0, progress=False)
    assert sleeps == []
    assert len(hub.requests) == 1
    assert f"file not found on server: {missing.url}" in str(exc.value)
    assert not missing.dest.exists() and not dl.part_path(missing.dest).exists()


def test_dropped_connection_resumes_with_range(hub, tmp_path):
    data = os.urandom(200_000)
    f = remote(hub, tmp_path, "big.bin", data)
    hub.faults["/big.bin"] = ["drop"]
    assert dl.download_all([f], **FAST) == {f.dest: sha(data)}
    first, second = hub.seen("/big.bin")
    assert "range" not in first and second["range"] == f"bytes={len(data) // 2}-"
    assert f.dest.read_bytes() == data


def test_server_ignoring_range_still_gives_the_right_file(hub, tmp_path):
    data = os.urandom(100_000)
    f = remote(hub, tmp_path, "big.bin", data)
    hub.faults["/big.bin"] = ["drop"]
    hub.ignore_range.add("/big.bin")  # answers the resume with 200 and the whole body
    assert dl.download_all([f], **FAST) == {f.dest: sha(data)}
    assert hub.seen("/big.bin")[1]["range"] == f"bytes={len(data) // 2}-"
    assert f.dest.read_bytes() == data


def test_complete_part_file_answered_416_is_finalised(hub, tmp_path):
    data = os.urandom(10_000)
    f = remote(hub, tmp_path, "done.bin", data, sha256=sha(data))
    dl.part_path(f.dest).write_bytes(data)  # interrupted between the last byte and the rename
    assert dl.download_all([f], **FAST) == {f.dest: sha(data)}
    assert [h["range"] for h in hub.seen("/done.bin")] == [f"bytes={len(data)}-"]
    assert not dl.part_path(f.dest).exists()


def test_sha256_mismatch_retries_once_then_fails(hub, tmp_path):
    data = b"payload" * 100
    f = remote(hub, tmp_path, "x.bin", data, sha256="0" * 64)
    with pytest.raises(DownloadError) as exc:
        dl.download_all([f], **FAST)
    msg = str(exc.value)
    assert f"expected sha256 {'0' * 64}, got {sha(data)}" in msg
    assert len(hub.seen("/x.bin")) == 2  # one fresh retry from scratch
    assert not f.dest.exists() and not dl.part_path(f.dest).exists()


@pytest.mark.parametrize(
    "header, value, ok",
    [
        ("ETag", '"{sha}"', True),
        ("X-Linked-ETag", "{sha}", True),
        ("ETag", '"' + "ab" * 32 + '"', False),  # a wrong advertised sha256 must be caught
        ("ETag", '"' + "a" * 40 + '"', True),  # a git sha1, not a sha256: ignored
    ],
)
def test_advertised_sha256_is_verified(hub, tmp_path, header, value, ok):
    data = os.urandom(5000)
    f = remote(hub, tmp_path, "e.bin", data, **{header: value.format(sha=sha(data))})
    if ok:
        assert dl.download_all([f], **FAST) == {f.dest: sha(data)}
    else:
        with pytest.raises(DownloadError, match=f"expected sha256 {'ab' * 32}"):
            dl.download_all([f], **FAST)
        assert not f.dest.exists()


def test_hub_sha256_trusted_over_cdn_etag_after_redirect(hub, tmp_path):
    # The Hub answers /resolve/ with a 302 carrying X-Linked-ETag; the CDN's own ETag is some other hash.
    data = os.urandom(5000)
    hub.add("/cdn/r.bin", data, ETag='"' + "cd" * 32 + '"')
    hub.redirects["/resolve/r.bin"] = ("/cdn/r.bin", {"X-Linked-ETag": sha(data), "ETag": f'"{sha(data)}"'})
    hub.faults["/cdn/r.bin"] = ["drop"]  # the resume goes through the redirect again, Range and all
    f = RemoteFile(hub.base + "/resolve/r.bin", tmp_path / "r.bin")
    assert dl.download_all([f], **FAST) == {f.dest: sha(data)}
    assert [h.get("range") for h in hub.seen("/cdn/r.bin")] == [None, f"bytes={len(data) // 2}-"]
    hub.redirects["/resolve/s.bin"] = ("/cdn/r.bin", {"X-Linked-ETag": "ef" * 32})
    g = RemoteFile(hub.base + "/resolve/s.bin", tmp_path / "s.bin")
    with pytest.raises(DownloadError, match=f"expected sha256 {'ef' * 32}"):
        dl.download_all([g], **FAST)


def test_complete_files_are_skipped_without_a_request(hub, tmp_path):
    data = b"already here"
    a = remote(hub, tmp_path, "a.bin", data)
    b = remote(hub, tmp_path, "b.bin", data, sha256=sha(data))
    a.dest.write_bytes(data)
    b.dest.write_bytes(data)
    assert dl.download_all([a, b], **FAST) == {a.dest: sha(data), b.dest: sha(data)}
    assert hub.requests == []
    # A file on disk that does not match its known sha256 is fetched again.
    c = remote(hub, tmp_path, "c.bin", data, sha256=sha(data))
    c.dest.write_bytes(b"corrupt")
    assert dl.download_all([c], **FAST) == {c.dest: sha(data)}
    assert c.dest.read_bytes() == data


def test_disk_full_keeps_part_and_says_what_to_do(hub, tmp_path, monkeypatch):
    data = os.urandom(10_000)
    f = remote(hub, tmp_path, "d.bin", data)
    monkeypatch.setattr(dl, "CHUNK_SIZE", 1024)
    disk_full = True
    real_write = dl._write_chunk

    def write(out, chunk):
        if disk_full and out.tell() >= 1024:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(out, chunk)

    monkeypatch.setattr(dl, "_write_chunk", write)
    with pytest.raises(DownloadError) as exc:
        dl.download_all([f], **FAST)
    msg = str(exc.value)
    assert "no space left" in msg and f"Free space at {tmp_path}" in msg
    assert len(hub.requests) == 1  # not retried
    assert dl.part_path(f.dest).stat().st_size == 1024 and not f.dest.exists()

    disk_full = False  # space freed: the rerun resumes
    assert dl.download_all([f], **FAST) == {f.dest: sha(data)}
    assert hub.requests[-1][1]["range"] == "bytes=1024-"


def test_interrupt_keeps_part_and_rerun_resumes(hub, tmp_path, monkeypatch):
    data = os.urandom(10_000)
    f = remote(hub, tmp_path, "k.bin", data)
    monkeypatch.setattr(dl, "CHUNK_SIZE", 1024)

    def ctrl_c(n: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        dl.download_one(f, backoff=0.01, on_bytes=ctrl_c)
    assert dl.part_path(f.dest).stat().st_size == 1024 and not f.dest.exists()
    assert dl.download_one(f, backoff=0.01) == sha(data)
    assert hub.requests[-1][1]["range"] == "bytes=1024-"


def test_all_failures_reported_together_after_the_rest_finish(hub, tmp_path):
    good = [remote(hub, tmp_path, f"ok{i}.bin", os.urandom(3000)) for i in range(3)]
    missing = RemoteFile(hub.base + "/missing.bin", tmp_path / "missing.bin")
    flaky = remote(hub, tmp_path, "flaky.bin", b"x")
    hub.faults["/flaky.bin"] = [500] * 10
    with pytest.raises(DownloadError) as exc:
        dl.download_all([good[0], missing, good[1], flaky, good[2]], workers=2, retries=2, **FAST)
    assert set(exc.value.failures) == {missing.dest, flaky.dest}
    msg = str(exc.value)
    assert "2 of 5 downloads failed (3 complete)" in msg
    assert "missing.bin: file not found on server" in msg and "flaky.bin:" in msg and "HTTP 500" in msg
    assert len(hub.seen("/flaky.bin")) == 3
    assert all(g.dest.exists() for g in good)


def test_network_down_stops_instead_of_trying_every_file(tmp_path):
    with socket.socket() as s:  # a port nothing listens on: connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    files = [RemoteFile(f"http://127.0.0.1:{port}/{i}", tmp_path / str(i)) for i in range(40)]
    with pytest.raises(DownloadError) as exc:
        dl.download_all(files, workers=2, retries=1, **FAST)
    assert len(exc.value.failures) == 40
    assert "stopped because 2 files in a row gave up after retries" in str(exc.value)
    assert "Check your network" in str(exc.value)


def test_climbmix_files_and_base_url_override(hub, tmp_path, monkeypatch):
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    monkeypatch.delenv(dl.HF_BASE_ENV, raising=False)
    train, val = dl.climbmix_files(10**6, tmp_path)
    assert len(train) == 6542 and val.dest.name == "shard_06542.parquet" and val not in train
    assert train[0].url == (
        "https://huggingface.co/datasets/karpathy/climbmix-400b-shuffle/resolve/main/shard_00000.parquet"
    )

    monkeypatch.setenv(dl.HF_BASE_ENV, hub.base + "/")
    train, val = dl.climbmix_files(2, tmp_path)
    assert [f.dest.name for f in train] == ["shard_00000.parquet", "shard_00001.parquet"]
    for f in [*train, val]:
        assert f.url.startswith(hub.base + "/datasets/karpathy/climbmix-400b-shuffle/resolve/main/")
        hub.add(f.url.removeprefix(hub.base), f.dest.name.encode())
    assert dl.download_all([*train, val], **FAST) == {
        f.dest: sha(f.dest.name.encode()) for f in [*train, val]
    }


def test_tinystories_files(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    monkeypatch.setenv(dl.HF_BASE_ENV, "https://mirror.example")
    train, val = dl.tinystories_files(tmp_path)
    assert val is None  # no val file upstream: prepare holds documents out
    base = "https://mirror.example/datasets/karpathy/tinystories-gpt4-clean/resolve/main"
    assert [f.url for f in train] == [f"{base}/tinystories_gpt4_clean.parquet"]


def test_module_imports_neither_torch_nor_mlx():
    code = "import sys, common.download; assert not {'torch', 'mlx'} & set(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])


def test_prepare_climbmix_end_to_end_from_a_mirror(hub, tmp_path, monkeypatch):
    """`prepare --dataset climbmix` against the local server: shards downloaded (one failing first), the pinned
    val shard used as val, checksums in the manifest, and a rerun downloads nothing."""
    import io
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    from common.prepare import prepare
    from tests.conftest import make_docs

    def parquet_bytes(docs):
        buf = io.BytesIO()
        pq.write_table(pa.table({"text": docs}), buf)
        return buf.getvalue()

    prefix = "/datasets/karpathy/climbmix-400b-shuffle/resolve/main"
    for i, name in enumerate(["shard_00000.parquet", "shard_00001.parquet", "shard_06542.parquet"]):
        hub.add(f"{prefix}/{name}", parquet_bytes(make_docs(120, i)))
    hub.faults[f"{prefix}/shard_00001.parquet"] = [503]
    monkeypatch.setenv("AUTORESEARCH_HF_BASE", hub.base)
    real = dl.download_all
    monkeypatch.setattr(dl, "download_all", lambda files, **k: real(files, **k, **FAST))  # fast retries
    out = prepare("climbmix", tmp_path / "d", vocab_size=300, num_shards=2, workers=2)
    m = json.loads((out / "manifest.json").read_text())
    assert [Path(e["path"]).name for e in m["text"]["train"]] == [
        "shard_00000.parquet",
        "shard_00001.parquet",
    ]
    assert [Path(e["path"]).name for e in m["text"]["val"]] == ["shard_06542.parquet"]
    assert m["text"]["val"][0]["sha256"] == sha(hub.files[f"{prefix}/shard_06542.parquet"])
    n_requests = len(hub.requests)
    prepare("climbmix", tmp_path / "d", vocab_size=300, num_shards=2, workers=2)
    assert len(hub.requests) == n_requests  # complete files are not fetched again
