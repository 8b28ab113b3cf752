"""A small Hugging Face hub on 127.0.0.1 for the tests (`tests/test_hub.py`): the parts of the
hub's HTTP interface that the real huggingface_hub / transformers / datasets clients use.

- `HEAD|GET /{repo}/resolve/{rev}/{path}` (models) and `/datasets/{repo}/resolve/{rev}/{path}`:
  the file, with `ETag`, `X-Repo-Commit`, `Content-Length`, byte ranges (`Range` -> 206), and
  for a branch name a 302 to the commit (as the hub does) so clients pin what they read;
- `GET /api/{models|datasets}/{repo}[/revision/{rev}]`: repository info (sha, siblings);
- `GET /api/{models|datasets}/{repo}/tree/{rev}[/{path}]` and `POST .../paths-info/{rev}`:
  the file listings `HfFileSystem` (datasets' data-file resolution and streaming) reads;
- errors as the hub sends them: 404 with `X-Error-Code: RepoNotFound|RevisionNotFound|
  EntryNotFound`, 401 `GatedRepo`.

Faults (`POST /_faults`, a JSON list; each applies to requests whose path contains `match`,
whose method is `method` when given, and only to the first `times` of them when given):
`{"status": 500}` or `{"status": 401, "code": "GatedRepo"}`, `{"drop": N}` (send the first N
bytes of the file, then close the connection), `{"delay": s}` (answer after s seconds).
`GET /_stats` returns the requests served and the faults injected since the last `/_faults`.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit


LFS_SUFFIXES = (".safetensors", ".parquet")


class Repo:
    """A repository: branch -> commit sha, commit sha -> {path: bytes}."""

    def __init__(self, kind: str, repo_id: str):
        self.kind, self.repo_id = kind, repo_id
        self.branches: dict[str, str] = {}
        self.commits: dict[str, dict[str, bytes]] = {}

    def commit(self, files: dict[str, bytes], branch: str = "main") -> str:
        sha = hashlib.sha1(json.dumps({"repo": self.repo_id, "branch": branch, "files": sorted(
            (p, hashlib.sha1(b).hexdigest()) for p, b in files.items())}).encode()).hexdigest()
        self.commits[sha], self.branches[branch] = dict(files), sha
        return sha

    def resolve(self, rev: str) -> str | None:
        return self.branches.get(rev) or (rev if rev in self.commits else None)


def git_sha(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


_PATH = re.compile(r"^/(?:(?P<api>api)/(?P<kinds>models|datasets)/|(?P<dskind>datasets)/)?(?P<repo>[^/]+(?:/[^/]+)?)"
                   r"(?:/(?P<op>resolve|tree|paths-info|revision)/(?P<rest>.*))?$")


class HubServer(ThreadingHTTPServer):
    """The hub on 127.0.0.1, and its content store (`cdn`, the same on another port: another
    origin, as the hub's CDN is, so clients treat its redirects as the real ones)."""

    daemon_threads = True

    def __init__(self, hub: "HubServer | None" = None):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.state = hub or self
        if hub is None:
            self.repos: dict[tuple[str, str], Repo] = {}
            self.faults: list[dict] = []
            self.applied = 0  # faults injected since the last `/_faults`
            self.requests: list[str] = []
            self.blobs: dict[str, bytes] = {}
            self.lock = threading.Lock()
            self.cdn = HubServer(hub=self)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def repo(self, kind: str, repo_id: str) -> Repo:
        return self.repos.setdefault((kind, repo_id), Repo(kind, repo_id))

    def start(self) -> "HubServer":
        for server in (self, self.cdn):
            threading.Thread(target=server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        for server in (self, self.cdn):
            server.shutdown()
            server.server_close()

    def handle_error(self, request, client_address) -> None:  # a client that hung up (a timeout): expected
        import sys

        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)

    def fault_for(self, path: str, method: str) -> dict | None:
        with self.lock:
            for fault in self.faults:
                if fault.get("match", "") in path and fault.get("method", method) == method \
                        and fault.get("times", 1) > 0:
                    if "times" in fault:  # a transient fault: the first `times` requests only
                        fault["times"] -= 1
                    self.applied += 1
                    return fault
        return None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: HubServer

    def log_message(self, *args) -> None:  # quiet
        pass

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        self._serve(body=True)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        data = self.rfile.read(length) if length else b""
        if self.path == "/_faults":
            with self.server.state.lock:
                state = self.server.state
                state.faults, state.requests, state.applied = json.loads(data or b"[]"), [], 0
            return self._json([])
        self._serve(body=True, form=parse_qs(data.decode()))

    # ------------------------------------------------------------------ dispatch

    def _serve(self, body: bool, form: dict | None = None) -> None:
        url = urlsplit(self.path)
        path = unquote(url.path)
        if path == "/_stats":
            state = self.server.state
            return self._json({"requests": len(state.requests), "log": state.requests[-200:], "faults": state.applied})
        with self.server.state.lock:
            self.server.state.requests.append(f"{self.command} {self.path}")
        fault = self.server.state.fault_for(path, self.command)
        if fault and fault.get("delay"):
            time.sleep(fault["delay"])
        if fault and fault.get("status"):
            return self._error(fault["status"], fault.get("code"), fault.get("message", "injected fault"))
        if path.startswith("/_lfs/"):
            data = self.server.state.blobs.get(path.split("/")[2])
            return self._bytes("", data, body, fault) if data is not None else self._error(404, None, "no blob")
        m = _PATH.match(url.path)
        if not m:
            return self._error(404, None, "no such route")
        kind = "dataset" if (m["kinds"] == "datasets" or m["dskind"]) else "model"
        repo = self.server.state.repos.get((kind, unquote(m["repo"])))
        if repo is None:
            return self._error(404, "RepoNotFound", "Repository not found")
        op, rest = m["op"], m["rest"] or ""
        if m["api"] and op in (None, "revision"):
            return self._info(repo, unquote(rest) if op else "main")
        rev, _, sub = rest.partition("/")
        rev = unquote(rev)
        sha = repo.resolve(rev)
        if sha is None:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        if op == "resolve":
            return self._file(repo, rev, sha, unquote(sub), body, fault)
        if op == "tree":
            return self._tree(repo, sha, unquote(sub).strip("/"), "recursive=true" in (url.query or "").lower())
        if op == "paths-info":
            return self._paths_info(repo, sha, (form or {}).get("paths", []))
        return self._error(404, None, "no such route")

    # ------------------------------------------------------------------ answers

    def _info(self, repo: Repo, rev: str) -> None:
        sha = repo.resolve(rev)
        if sha is None:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        files = repo.commits[sha]
        self._json({"id": repo.repo_id, "_id": sha[:24], "sha": sha, "private": False, "gated": False,
                    "disabled": False, "downloads": 0, "likes": 0, "tags": [],
                    "lastModified": "2026-01-01T00:00:00.000Z",
                    "createdAt": "2026-01-01T00:00:00.000Z", "cardData": {},
                    "siblings": [{"rfilename": p} for p in sorted(files)]})

    def _file(self, repo: Repo, rev: str, sha: str, name: str, body: bool, fault: dict | None) -> None:
        files = repo.commits[sha]
        if name not in files:
            return self._error(404, "EntryNotFound", f"{name} does not exist on {rev}", commit=sha)
        if name.endswith(LFS_SUFFIXES):  # large files: a redirect to the content store, as the hub does
            data = files[name]
            oid = hashlib.sha256(data).hexdigest()
            self.server.state.blobs[oid] = data
            self.send_response(302)
            self.send_header("Location", f"{self.server.state.cdn.url}/_lfs/{oid}/{name.rsplit('/', 1)[-1]}")
            self.send_header("X-Linked-Etag", f'"{oid}"')
            self.send_header("X-Linked-Size", str(len(data)))
            self._common(sha, data)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        return self._bytes(sha, files[name], body, fault)

    def _bytes(self, sha: str, data: bytes, body: bool, fault: dict | None) -> None:
        start, stop = 0, len(data)
        rng = re.match(r"bytes=(\d+)-(\d*)", self.headers.get("Range") or "")
        if rng:
            start, stop = int(rng[1]), min(len(data), int(rng[2]) + 1 if rng[2] else len(data))
        self.send_response(206 if rng else 200)
        self._common(sha, data)
        self.send_header("Content-Length", str(stop - start))
        self.send_header("Accept-Ranges", "bytes")
        if rng:
            self.send_header("Content-Range", f"bytes {start}-{stop - 1}/{len(data)}")
        self.end_headers()
        if not body:
            return
        cut = fault.get("drop") if fault else None
        if cut is not None:  # the connection dies after byte `cut` of the file
            self.wfile.write(data[start:max(start, cut)])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)
            return
        self.wfile.write(data[start:stop])

    def _common(self, sha: str, data: bytes) -> None:
        self.send_header("ETag", f'"{git_sha(data)}"')
        if sha:
            self.send_header("X-Repo-Commit", sha)
        self.send_header("Content-Type", "application/octet-stream")

    def _entry(self, files: dict[str, bytes], path: str) -> dict | None:
        if path in files:
            return {"type": "file", "oid": git_sha(files[path]), "size": len(files[path]), "path": path}
        if any(p.startswith(path + "/") for p in files) or path == "":
            return {"type": "directory", "oid": hashlib.sha1(path.encode()).hexdigest(), "size": 0, "path": path}
        return None

    def _tree(self, repo: Repo, sha: str, sub: str, recursive: bool) -> None:
        files = repo.commits[sha]
        if sub and self._entry(files, sub) is None:
            return self._error(404, "EntryNotFound", f"{sub} does not exist", commit=sha)
        below = [p for p in files if not sub or p.startswith(sub + "/")]
        paths = set()
        for p in below:
            parts = p[len(sub) + 1 if sub else 0:].split("/")
            for i in range(1, len(parts) + 1 if recursive else 2):
                paths.add("/".join(filter(None, [sub, *parts[:i]])))
        self._json([self._entry(files, p) for p in sorted(paths)])

    def _paths_info(self, repo: Repo, sha: str, paths: list[str]) -> None:
        files = repo.commits[sha]
        self._json([e for p in paths if (e := self._entry(files, p.strip("/"))) is not None])

    def _json(self, obj) -> None:
        data = json.dumps(obj).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _error(self, status: int, code: str | None, message: str, commit: str | None = None) -> None:
        data = json.dumps({"error": message}).encode()
        self.send_response(status)
        if code:
            self.send_header("X-Error-Code", code)
        self.send_header("X-Error-Message", message)
        if commit:
            self.send_header("X-Repo-Commit", commit)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
