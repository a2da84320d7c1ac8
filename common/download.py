"""Parallel, resumable HTTP downloads (stdlib only) and the file lists of the datasets `prepare` can fetch.

    train, val = climbmix_files(num_train=10, dest_dir=data_dir / "text")
    digests = download_all([*train, val])        # {dest: sha256 hex}; raises DownloadError

Each file streams into `<dest>.part` and is renamed to `dest` only once complete, fsynced and verified, so
a file at `dest` is always whole; a rerun skips it and resumes any `.part` with an HTTP Range request.
Connection errors, timeouts, truncated bodies, 5xx, 408 and 429 are retried with exponential backoff and
jitter; other 4xx fail at once. Set AUTORESEARCH_HF_BASE (or HF_ENDPOINT) to fetch from a Hugging Face mirror.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import os
import random
import re
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "DownloadError",
    "OFFLINE_ADVICE",
    "RemoteFile",
    "climbmix_files",
    "download_all",
    "download_one",
    "hf_dataset_url",
    "reachable",
    "tinystories_files",
]

# ------------------------------------------------------------------------------------------------------------
# Dataset file lists

HF_BASE = "https://huggingface.co"
HF_BASE_ENV = "AUTORESEARCH_HF_BASE"

CLIMBMIX_REPO = "karpathy/climbmix-400b-shuffle"
CLIMBMIX_VAL_SHARD = 6542  # the last shard, pinned as validation as upstream autoresearch does

TINYSTORIES_REPO = "karpathy/tinystories-gpt4-clean"
# One parquet file (~640 MB, `text` column) at the repo root. Not checked against the Hub (written offline):
# the name is the one the public autoresearch forks that use this dataset download
# (`.../resolve/main/tinystories_gpt4_clean.parquet`). There is no separate val file; see tinystories_files.
TINYSTORIES_FILES = ("tinystories_gpt4_clean.parquet",)


@dataclass(frozen=True)
class RemoteFile:
    url: str
    dest: Path  # final path; the download goes to `<dest>.part` first
    sha256: str | None = None  # expected hex digest, if known in advance

    def __post_init__(self) -> None:
        object.__setattr__(self, "dest", Path(self.dest))
        if self.sha256 is not None:
            object.__setattr__(self, "sha256", self.sha256.lower())


def hf_base() -> str:
    """The Hub endpoint, read at call time so a mirror (or a test server) set in the environment counts."""
    base = os.environ.get(HF_BASE_ENV) or os.environ.get("HF_ENDPOINT") or HF_BASE
    return base.rstrip("/")


def hf_dataset_url(repo: str, filename: str, revision: str = "main") -> str:
    return f"{hf_base()}/datasets/{repo}/resolve/{revision}/{filename}"


def reachable(url: str | None = None, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to `url`'s server (default: the Hub or its mirror), or to the proxy that urllib
    would use for it, opens within `timeout` seconds: a quick offline check before any download and its retries."""
    import socket
    import urllib.parse

    url = url or hf_base()
    parts = urllib.parse.urlsplit(url)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(parts.hostname or ""):
        parts = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname, port), timeout=timeout).close()
        return True
    except (OSError, ValueError):
        return False


def climbmix_files(num_train: int, dest_dir: str | os.PathLike[str]) -> tuple[list[RemoteFile], RemoteFile]:
    """The first `num_train` training shards (capped at the 6542 that exist) and the pinned val shard 6542."""
    if num_train < 0:
        raise ValueError(f"num_train must be >= 0, got {num_train}")
    dest = Path(dest_dir)

    def shard(i: int) -> RemoteFile:
        name = f"shard_{i:05d}.parquet"
        return RemoteFile(hf_dataset_url(CLIMBMIX_REPO, name), dest / name)

    return [shard(i) for i in range(min(num_train, CLIMBMIX_VAL_SHARD))], shard(CLIMBMIX_VAL_SHARD)


def tinystories_files(dest_dir: str | os.PathLike[str]) -> tuple[list[RemoteFile], RemoteFile | None]:
    """(train files, val file). The dataset ships no val file, so val is None: the caller holds out documents
    from the training file itself (never train and evaluate on the same rows)."""
    dest = Path(dest_dir)
    train = [RemoteFile(hf_dataset_url(TINYSTORIES_REPO, name), dest / name) for name in TINYSTORIES_FILES]
    return train, None


# ------------------------------------------------------------------------------------------------------------
# Errors

CHUNK_SIZE = 1 << 20  # bytes per read/write; also how often a cancel request is noticed
MAX_RETRY_AFTER = 60.0  # honour a server's Retry-After up to this many seconds, else use our own backoff
MAX_BACKOFF = 60.0
USER_AGENT = "autoresearch-download/0.1 (python urllib)"
RERUN = "rerun `autoresearch prepare` with the same arguments: complete files are kept, partial ones resume"
OFFLINE_ADVICE = "Without a network, `autoresearch prepare --dataset demo` makes the offline demo data."
NETWORK_ADVICE = f"Check your network (or set {HF_BASE_ENV} to a mirror) and {RERUN}. {OFFLINE_ADVICE}"
_EDQUOT = getattr(errno, "EDQUOT", errno.ENOSPC)
_HEX64 = re.compile(r"[0-9a-f]{64}")
_CONTENT_RANGE = re.compile(r"bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)")


class DownloadError(RuntimeError):
    """A download that failed for good. `problem` says what happened to which file, `advice` what to do next;
    from download_all, `failures` maps every failed dest to its problem."""

    def __init__(self, problem: str, advice: str = NETWORK_ADVICE, failures: dict[Path, str] | None = None):
        super().__init__(f"{problem}\n{advice}" if advice else problem)
        self.problem = problem
        self.advice = advice
        self.failures = failures or {}


class _DiskFull(DownloadError):
    """Out of space: the other downloads would fail the same way, so download_all stops them."""


class _GaveUp(DownloadError):
    """Retries exhausted on transient errors: several of these in a row mean the network is down."""


class _Retry(Exception):
    """A transient failure: back off, then try again (resuming the .part)."""

    def __init__(self, cause: str, retry_after: float | None = None):
        super().__init__(cause)
        self.retry_after = retry_after


class _Cancelled(Exception):
    """download_all asked this download to stop (Ctrl-C, full disk, network down); its .part stays."""


# ------------------------------------------------------------------------------------------------------------
# One file


def part_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def download_one(
    f: RemoteFile,
    retries: int = 5,
    backoff: float = 1.0,
    timeout: float = 30.0,
    opener: urllib.request.OpenerDirector | None = None,
    on_bytes: Callable[[int], None] | None = None,
    cancel: threading.Event | None = None,
    on_size: Callable[[int, int], None] | None = None,
) -> str:
    """Download `f` to `f.dest` unless it is already there; return its sha256 hex digest.

    `retries` counts transient failures in a row without progress: a long download over a flaky link may
    resume many times. `opener` is anything with urllib's `open(request, timeout=)`; `on_bytes(n)` is called
    per chunk received; setting `cancel` makes the download stop at its next chunk, keeping the .part;
    `on_size(total, offset)` is called when a response states the file's size (offset: bytes already on disk).
    """
    try:
        return _download_one(f, retries, backoff, timeout, opener, on_bytes, cancel, on_size)
    except OSError as e:  # local filesystem trouble outside the streaming loop (mkdir, rename, reading dest)
        raise _disk_error(e, f, part_path(f.dest)) from e


def _download_one(
    f: RemoteFile,
    retries: int,
    backoff: float,
    timeout: float,
    opener: urllib.request.OpenerDirector | None,
    on_bytes: Callable[[int], None] | None,
    cancel: threading.Event | None,
    on_size: Callable[[int, int], None] | None = None,
) -> str:
    dest, part = f.dest, part_path(f.dest)
    if dest.exists():
        digest = _sha256_file(dest)
        if f.sha256 is None or digest == f.sha256:
            part.unlink(missing_ok=True)  # a leftover from an earlier, interrupted rerun
            return digest
        dest.unlink()  # stale or corrupt: fetch it again
    dest.parent.mkdir(parents=True, exist_ok=True)
    opener = opener or default_opener()
    advertised: str | None = None  # sha256 the server told us, kept across attempts
    restarted = False  # one fresh download is allowed after a checksum mismatch
    failures, high_water = 0, _size(part)
    while True:
        if cancel is not None and cancel.is_set():
            raise _Cancelled
        try:
            digest, seen = _attempt(f, part, opener, timeout, on_bytes, cancel, on_size)
        except _Retry as e:
            size = _size(part)
            # Only failures without progress count: a slow but moving download is never given up on.
            failures = 0 if size > high_water else failures + 1
            high_water = max(high_water, size)
            if failures > retries:
                raise _GaveUp(f"{f.url}: gave up after {retries + 1} tries without progress: {e}") from e
            delay = e.retry_after
            if delay is None:
                delay = min(MAX_BACKOFF, backoff * 2 ** max(failures - 1, 0)) * random.uniform(0.5, 1.5)
            _sleep(delay, cancel)
            continue
        advertised = seen or advertised
        want = f.sha256 or advertised
        if want is not None and digest != want:
            part.unlink(missing_ok=True)
            if not restarted:  # a stale .part (file changed upstream) or a corrupt one: once more from zero
                restarted = True
                continue
            raise DownloadError(
                f"{f.url}: checksum mismatch for {dest.name}: expected sha256 {want}, got {digest}",
                advice=f"The server or a proxy may be serving a different file; {RERUN}.",
            )
        os.replace(part, dest)
        _fsync_dir(dest.parent)
        return digest


def _attempt(
    f: RemoteFile,
    part: Path,
    opener: urllib.request.OpenerDirector,
    timeout: float,
    on_bytes: Callable[[int], None] | None,
    cancel: threading.Event | None,
    on_size: Callable[[int, int], None] | None = None,
) -> tuple[str, str | None]:
    """One request: (sha256 of the complete .part, sha256 the server advertised); _Retry if transient."""
    offset = _size(part)
    req = urllib.request.Request(f.url, headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"})
    if offset:
        req.add_header("Range", f"bytes={offset}-")
    hops: list[Mapping[str, str]] = []
    req.hop_headers = hops  # type: ignore[attr-defined]  # filled by _RecordRedirects
    try:
        resp = opener.open(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        try:
            return _http_error(e, f, part, offset, hops)
        finally:
            e.close()
    except (OSError, http.client.HTTPException) as e:  # refused, reset, DNS, TLS, timeout
        raise _Retry(_describe(e)) from e

    with resp:
        status = getattr(resp, "status", None) or resp.getcode()
        advertised = _advertised_sha256(resp.headers, hops)
        length = _int(resp.headers.get("Content-Length"))
        if status == 206:
            start, total = _content_range(resp.headers.get("Content-Range"))
            if start != offset:
                part.unlink(missing_ok=True)
                raise _Retry(f"server resumed at byte {start} instead of {offset}; restarting from zero")
            if total is None and length is not None:
                total = offset + length
            mode = "ab"
        elif status == 200:  # a full body: the server ignored our Range (or we sent none), start from zero
            offset, total, mode = 0, length, "wb"
        else:
            raise _Retry(f"unexpected HTTP {status} from {f.url}")
        if on_size is not None and total is not None:
            on_size(total, offset)

        received = offset
        try:
            # Resuming: the digest covers the bytes already on disk, so hash them before appending.
            hasher = _hash_file(part) if mode == "ab" else hashlib.sha256()
            with part.open(mode) as out:
                while True:
                    if cancel is not None and cancel.is_set():
                        raise _Cancelled
                    try:
                        chunk = resp.read(CHUNK_SIZE)
                    except (OSError, http.client.HTTPException) as e:
                        raise _Retry(f"connection lost after {received} bytes: {_describe(e)}") from e
                    if not chunk:
                        break
                    _write_chunk(out, chunk)
                    hasher.update(chunk)
                    received += len(chunk)
                    if on_bytes is not None:
                        on_bytes(len(chunk))
                if total is not None and received != total:
                    # http.client returns b"" on an early close instead of raising; the .part resumes.
                    raise _Retry(f"connection closed after {received} of {total} bytes")
                out.flush()
                os.fsync(out.fileno())
        except OSError as e:  # network errors became _Retry above, so this one is the disk
            raise _disk_error(e, f, part) from e
    return hasher.hexdigest(), advertised


def _http_error(
    e: urllib.error.HTTPError, f: RemoteFile, part: Path, offset: int, hops: list[Mapping[str, str]]
) -> tuple[str, str | None]:
    code = e.code
    if code == 416 and offset:
        # Our Range starts at or past the end: the .part is complete if its size is the file's size.
        _, total = _content_range(e.headers.get("Content-Range"))
        if total == offset:
            return _sha256_file(part), _advertised_sha256(e.headers, hops)
        part.unlink(missing_ok=True)
        raise _Retry(f"server refused to resume at byte {offset} (HTTP 416); restarting from zero")
    if code in (408, 429) or code >= 500:
        raise _Retry(f"HTTP {code} {e.reason}", retry_after=_retry_after(e.headers.get("Retry-After")))
    if code in (404, 410):
        raise DownloadError(
            f"file not found on server: {f.url} (HTTP {code})",
            advice=f"Check the dataset and shard numbers, or the mirror in {HF_BASE_ENV} if set.",
        )
    advice = "The file may be private or gated; " if code in (401, 403) else ""
    raise DownloadError(f"{f.url}: HTTP {code} {e.reason} (not retried)", advice=advice + NETWORK_ADVICE)


def _disk_error(e: OSError, f: RemoteFile, part: Path) -> DownloadError:
    if e.errno in (errno.ENOSPC, _EDQUOT):
        return _DiskFull(
            f"no space left on device while writing {part} ({f.url})",
            advice=f"Free space at {part.parent} and {RERUN} (the partial file is kept).",
        )
    return DownloadError(
        f"cannot write {part}: {e}", advice=f"Check that {part.parent} is writable and {RERUN}."
    )


def _write_chunk(out: Any, data: bytes) -> None:
    """The one place downloaded bytes reach the disk (tests replace it to simulate a full disk)."""
    out.write(data)


class _RecordRedirects(urllib.request.HTTPRedirectHandler):
    """Keeps each redirect's headers on the request: the Hub's own response carries the file's sha256, the
    CDN it redirects to may not."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        hops = getattr(req, "hop_headers", None)
        if new is not None and hops is not None:
            hops.append(headers)
            new.hop_headers = hops
        return new


def default_opener() -> urllib.request.OpenerDirector:
    return urllib.request.build_opener(_RecordRedirects())


def _advertised_sha256(headers: Mapping[str, str], hops: list[Mapping[str, str]]) -> str | None:
    """The sha256 a Hugging Face server states for an LFS file: X-Linked-ETag on any response, else the ETag
    of the first server asked. A CDN's ETag after a redirect is ignored: it may be another 64-hex hash
    (a Xet content hash, for instance)."""
    for h in [*hops, headers]:
        if digest := _hex64(h.get("X-Linked-ETag")):
            return digest
    return _hex64((hops[0] if hops else headers).get("ETag"))


def _hex64(etag: str | None) -> str | None:
    if not etag or etag.startswith("W/"):  # a weak ETag is not a content hash
        return None
    value = etag.strip().strip('"').lower()
    return value if _HEX64.fullmatch(value) else None


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """(first byte, total size) from `bytes 100-199/200` or `bytes */200`."""
    m = _CONTENT_RANGE.match(value or "")
    if not m:
        return None, None
    return _int(m.group(1)), _int(m.group(2))


def _retry_after(value: str | None) -> float | None:
    try:
        seconds = float(value) if value else None
    except ValueError:  # the HTTP-date form: rare, use our own backoff
        return None
    return seconds if seconds is not None and 0 <= seconds <= MAX_RETRY_AFTER else None


def _int(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() else None


def _describe(e: BaseException) -> str:
    reason = getattr(e, "reason", None)  # URLError wraps the socket error
    return f"{type(e).__name__}: {reason if reason is not None else e}"


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _hash_file(path: Path) -> Any:
    """A sha256 object fed with the file's bytes (to be continued with more)."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK_SIZE):
            h.update(chunk)
    return h


def _sha256_file(path: Path) -> str:
    return _hash_file(path).hexdigest()


def _fsync_dir(path: Path) -> None:
    """Make the rename durable. Best effort: some platforms (Windows) cannot open a directory."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _duration(seconds: float) -> str:
    return f"{seconds:.0f}s" if seconds < 120 else f"{seconds / 60:.0f} min"


def _sleep(seconds: float, cancel: threading.Event | None) -> None:
    if cancel is None:
        time.sleep(seconds)
    elif cancel.wait(seconds):
        raise _Cancelled


# ------------------------------------------------------------------------------------------------------------
# Many files


class _Progress:
    """A line per finished file and an aggregate line at most every `interval` seconds, on stderr, with the time
    left at the rate so far (files not yet started are counted at the mean size of those that have)."""

    def __init__(self, total: int, enabled: bool, interval: float = 5.0):
        self.total, self.enabled, self.interval = total, enabled, interval
        self.done = self.skipped = self.nbytes = 0
        self.t0 = self.last = time.monotonic()
        self.lock = threading.Lock()
        self.sizes: dict[Path, int] = {}  # every file whose size a server stated
        self.left: dict[Path, int] = {}  # bytes still to fetch of the files in flight

    def _print(self, msg: str) -> None:
        if self.enabled:
            print(f"download: {msg}", file=sys.stderr, flush=True)

    def _aggregate(self, eta: bool = False) -> str:
        mb = self.nbytes / 1e6
        rate = mb / max(time.monotonic() - self.t0, 1e-9)
        line = f"{self.done}/{self.total} files, {mb:.1f} MB, {rate:.1f} MB/s"
        if eta and self.sizes and rate > 0:
            unstarted = self.total - self.done - len(self.left)
            left = sum(self.left.values()) + unstarted * sum(self.sizes.values()) / len(self.sizes)
            line += (
                f", {'~' if unstarted else ''}{left / 1e6:.0f} MB left, ~{_duration(left / 1e6 / rate)} to go"
            )
        return line

    def expect(self, dest: Path, size: int, offset: int) -> None:
        with self.lock:
            self.sizes[dest] = size
            self.left[dest] = size - offset

    def add_bytes(self, n: int, dest: Path | None = None) -> None:
        with self.lock:
            self.nbytes += n
            if dest in self.left:
                self.left[dest] -= n
            now = time.monotonic()
            if now - self.last >= self.interval:
                self.last = now
                self._print(self._aggregate(eta=True))

    def file_done(self, f: RemoteFile, fetched: int) -> None:
        with self.lock:
            self.done += 1
            self.left.pop(f.dest, None)
            if fetched:
                self._print(f"[{self.done}/{self.total}] {f.dest.name} ({fetched / 1e6:.1f} MB)")
            else:
                self.skipped += 1

    def finish(self) -> None:
        with self.lock:
            present = f" ({self.skipped} already present)" if self.skipped else ""
            self._print(f"done: {self._aggregate()}{present}")


def download_all(
    files: list[RemoteFile],
    workers: int = 8,
    retries: int = 5,
    backoff: float = 1.0,
    timeout: float = 30.0,
    progress: bool = True,
    opener: urllib.request.OpenerDirector | None = None,
) -> dict[Path, str]:
    """Download every file (threads, `workers` at a time); returns {dest: sha256 hex}. Already-complete files
    are skipped (verified by sha256 if known). Raises DownloadError listing every file that still failed after
    retries, after letting the others finish.

    Exceptions: a full disk stops the remaining downloads at once, and so do `workers` files in a row giving
    up after retries (the network or server is down: no point in trying thousands more). Ctrl-C stops every
    download, keeping the .part files, and re-raises.
    """
    unique: dict[Path, RemoteFile] = {}
    for f in files:  # a file listed twice is fetched once
        if unique.setdefault(f.dest, f).url != f.url:
            raise ValueError(f"two URLs for one destination {f.dest}: {unique[f.dest].url} and {f.url}")
    opener = opener or default_opener()
    cancel = threading.Event()
    stop_reason = ""
    report = _Progress(len(unique), progress)

    def work(f: RemoteFile) -> str:
        fetched = 0

        def on_bytes(n: int) -> None:
            nonlocal fetched
            fetched += n
            report.add_bytes(n, f.dest)

        digest = download_one(
            f,
            retries,
            backoff,
            timeout,
            opener,
            on_bytes,
            cancel,
            on_size=lambda n, at: report.expect(f.dest, n, at),
        )
        report.file_done(f, fetched)
        return digest

    results: dict[Path, str] = {}
    failed: dict[Path, DownloadError] = {}
    cancelled: list[Path] = []
    transient_in_a_row = 0
    pool = ThreadPoolExecutor(max_workers=max(1, min(workers, len(unique))), thread_name_prefix="download")
    try:
        futures = {pool.submit(work, f): f for f in unique.values()}
        for fut in as_completed(futures):
            dest = futures[fut].dest
            try:
                results[dest] = fut.result()
                transient_in_a_row = 0
            except _Cancelled:
                cancelled.append(dest)
            except DownloadError as e:
                failed[dest] = e
                if isinstance(e, _DiskFull) and not cancel.is_set():
                    stop_reason = "the disk filled up"
                    cancel.set()
                transient_in_a_row = transient_in_a_row + 1 if isinstance(e, _GaveUp) else 0
                if transient_in_a_row >= max(2, workers) and not cancel.is_set():
                    stop_reason = f"{transient_in_a_row} files in a row gave up after retries"
                    cancel.set()
    except BaseException:  # Ctrl-C (or a bug): stop the workers at their next chunk; .part files stay
        cancel.set()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    report.finish()

    if failed or cancelled:
        problems = {dest: failed[dest].problem for dest in sorted(failed)}
        problems.update({dest: f"not finished: stopped because {stop_reason}" for dest in sorted(cancelled)})
        shown = [f"  {dest.name}: {problem}" for dest, problem in list(problems.items())[:50]]
        if len(problems) > 50:
            shown.append(f"  ... and {len(problems) - 50} more")
        head = f"{len(problems)} of {len(unique)} downloads failed ({len(results)} complete):"
        advice = "\n".join(dict.fromkeys(failed[d].advice for d in sorted(failed)))  # distinct, in order
        raise DownloadError("\n".join([head, *shown]), advice=advice, failures=problems)
    return results
