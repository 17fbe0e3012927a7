"""A local stand-in for the Hub, so pushes (and downloads back) run offline through the real `huggingface_hub` client.

    with FakeHub() as hub:                       # or the `fake_hub` pytest fixture (also sets HF_TOKEN)
        push_folder(folder, "me/model", token=hub.token)           # in-process
        subprocess.run([...], env=hub.child_env())                 # or in a child process
        hub.files("me/model")                                      # {"README.md": b"...", ...}

Two front ends share one in-memory store:

- In-process, `huggingface_hub.set_client_factory` installs an `httpx2.Client` whose `MockTransport` hands every
  request to the stand-in, whatever its host. So code that talks to the default `https://huggingface.co` endpoint,
  such as `transformers.Trainer.push_to_hub` through its shared `HfApi`, needs no endpoint change. This is the
  fast path: no socket, no extra process, and `HF_ENDPOINT` does not need to be set before the import.
- For child processes, the same handler is served on 127.0.0.1 by a `ThreadingHTTPServer` thread. `HF_ENDPOINT`
  is read when `huggingface_hub` is imported, so it has to be in the child's environment (`child_env()`).

Either way the responses name `https://huggingface.co` (the client rewrites that host to a custom endpoint;
`RepoUrl` rejects other hosts). Routes served: repo creation, `validate-yaml` (the front matter has to be a YAML
mapping), `preupload` (every file is "regular", so the content travels base64-encoded inside the NDJSON commit
and no LFS or Xet transfer happens), `commit` (adds and deletes), repo info, file tree and `resolve` (HEAD/GET, so a
pushed model can be downloaded back with `snapshot_download` or `from_pretrained`). Write routes require a bearer
token, as the Hub does. Only the current tree of each repo is kept: revisions other than "main" or the head commit
answer 404.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

import httpx2
import pytest
import yaml
from huggingface_hub import constants, set_client_factory
from huggingface_hub.utils._http import default_client_factory

HUB_URL = "https://huggingface.co"
_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
_REPO = r"(?P<kind>models|datasets|spaces)/(?P<repo>[^/]+/[^/]+)"
_RESOLVE = re.compile(r"^/((?P<kind>datasets|spaces)/)?(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")
_ROUTES = [
    ("POST", re.compile(r"^/api/repos/create$"), "_create_repo"),
    ("POST", re.compile(r"^/api/validate-yaml$"), "_validate_yaml"),
    ("POST", re.compile(rf"^/api/{_REPO}/preupload/(?P<rev>[^/]+)$"), "_preupload"),
    ("POST", re.compile(rf"^/api/{_REPO}/commit/(?P<rev>[^/]+)$"), "_commit"),
    ("GET", re.compile(rf"^/api/{_REPO}(/revision/(?P<rev>[^/]+))?$"), "_repo_info"),
    ("GET", re.compile(rf"^/api/{_REPO}/tree/(?P<rev>[^/]+)(/(?P<path>.+))?$"), "_tree"),
    ("GET", _RESOLVE, "_resolve"),
    ("HEAD", _RESOLVE, "_resolve"),
]

Response = tuple[int, dict[str, str], bytes]


@dataclass
class _Repo:
    private: bool
    head: str
    files: dict[str, bytes] = field(default_factory=dict)
    commits: list[dict] = field(default_factory=list)


class FakeHub:
    """In-memory Hub for push tests; use as a context manager (serves both in-process and child-process clients).

    Attributes:
        endpoint: `http://127.0.0.1:<port>`, the `HF_ENDPOINT` for child processes.
        token: a token the stand-in accepts (any non-empty bearer token is accepted).
        user: namespace given to repos created without one.
        requests: (method, path, authorized) of every request, in arrival order.
    """

    token = "hf_fake_token"

    def __init__(self, user: str = "fake-user") -> None:
        self.user = user
        self.endpoint = ""
        self.requests: list[tuple[str, str, bool]] = []
        self._repos: dict[tuple[str, str], _Repo] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    # ------------------------------------------------------------------ test-facing API

    def files(self, repo_id: str, repo_type: str = "model") -> dict[str, bytes]:
        """Current files of a repo: path -> bytes."""
        return dict(self._repos[(repo_type, repo_id)].files)

    def commits(self, repo_id: str, repo_type: str = "model") -> list[dict]:
        """Commits of a repo, oldest first: {"oid", "summary", "added": [paths], "deleted": [paths]}."""
        return list(self._repos[(repo_type, repo_id)].commits)

    def repo_ids(self, repo_type: str = "model") -> list[str]:
        return sorted(repo for kind, repo in self._repos if kind == repo_type)

    def child_env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """Environment for a child process that pushes here: HF_ENDPOINT, HF_TOKEN, no telemetry, not offline."""
        env = dict(os.environ if base is None else base)
        env.pop("HF_HUB_OFFLINE", None)
        env.pop("TRANSFORMERS_OFFLINE", None)
        env.update(
            HF_ENDPOINT=self.endpoint,
            HF_TOKEN=self.token,
            HF_HUB_DISABLE_TELEMETRY="1",
            HF_HUB_DISABLE_PROGRESS_BARS="1",
        )
        return env

    def __enter__(self) -> FakeHub:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_class(self))
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, args=(0.05,), name="fake-hub", daemon=True).start()
        set_client_factory(
            lambda: httpx2.Client(transport=httpx2.MockTransport(self._mock_transport), follow_redirects=True)
        )
        # Safe: with the mock transport installed no huggingface_hub request can leave the process.
        self._was_offline, constants.HF_HUB_OFFLINE = constants.HF_HUB_OFFLINE, False
        return self

    def __exit__(self, *exc_info) -> None:
        constants.HF_HUB_OFFLINE = self._was_offline
        set_client_factory(default_client_factory)
        self._server.shutdown()
        self._server.server_close()

    # ------------------------------------------------------------------ dispatch

    def handle(self, method: str, raw_path: str, headers: Mapping[str, str], body: bytes) -> Response:
        """Answer one request: (status, headers, body). `raw_path` is still URL-quoted, without the query."""
        credentials = headers.get("authorization") or ""
        authorized = credentials.startswith("Bearer ") and len(credentials) > len("Bearer ")
        with self._lock:
            self.requests.append((method, raw_path, authorized))
            for route_method, pattern, name in _ROUTES:
                match = pattern.match(raw_path)
                if match and route_method == method:
                    params = {k: unquote(v) for k, v in match.groupdict().items() if v is not None}
                    if method == "POST" and name != "_validate_yaml" and not authorized:
                        return _error(401, "Unauthorized", "Invalid credentials in Authorization header")
                    return getattr(self, name)(body=body, head_only=method == "HEAD", **params)
        return _error(404, "NotFound", f"The fake hub does not serve {method} {raw_path}")

    def _mock_transport(self, request: httpx2.Request) -> httpx2.Response:
        request.read()
        raw_path = request.url.raw_path.decode().split("?")[0]
        status, headers, body = self.handle(request.method, raw_path, request.headers, request.content)
        return httpx2.Response(status, headers=headers, content=body)

    # ------------------------------------------------------------------ routes

    def _create_repo(self, body: bytes, **_) -> Response:
        payload = json.loads(body)
        repo_type = payload.get("type") or "model"
        repo_id = f"{payload.get('organization') or self.user}/{payload['name']}"
        url = f"{HUB_URL}/{'' if repo_type == 'model' else repo_type + 's/'}{repo_id}"
        if (repo_type, repo_id) in self._repos:
            return _json(409, {"error": "You already created this repo", "url": url})
        private = payload.get("visibility", "public") == "private" or bool(payload.get("private"))
        self._repos[(repo_type, repo_id)] = _Repo(private=private, head=_sha1(f"init {repo_type}/{repo_id}"))
        return _json(200, {"url": url, "name": repo_id})

    def _validate_yaml(self, body: bytes, **_) -> Response:
        content = json.loads(body)["content"]
        parts = content.split("---", 2)
        if not content.startswith("---") or len(parts) < 3:
            return _json(200, {"errors": [], "warnings": [{"message": "empty or missing yaml metadata"}]})
        try:
            metadata = yaml.safe_load(parts[1])
        except yaml.YAMLError as error:
            return _json(400, {"errors": [{"message": f"YAML does not parse: {error}"}]})
        if not isinstance(metadata, dict):
            return _json(400, {"errors": [{"message": "metadata must be a YAML mapping"}]})
        return _json(200, {"errors": [], "warnings": []})

    def _preupload(self, body: bytes, kind: str, repo: str, rev: str, **_) -> Response:
        found = self._find(kind, repo, rev)
        if isinstance(found, tuple):
            return found
        files = [
            {
                "path": item["path"],
                "uploadMode": "regular",
                "shouldIgnore": False,
                "oid": _git_blob_oid(found.files[item["path"]]) if item["path"] in found.files else None,
            }
            for item in json.loads(body)["files"]
        ]
        return _json(200, {"files": files, "commitOid": found.head})

    def _commit(self, body: bytes, kind: str, repo: str, rev: str, **_) -> Response:
        found = self._find(kind, repo, rev)
        if isinstance(found, tuple):
            return found
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            return _error(400, "BadRequest", "the first NDJSON line must be the commit header")
        header = lines[0]["value"]
        if header.get("parentCommit") not in (None, found.head):
            return _error(412, "PreconditionFailed", "parentCommit is not the head of the branch")
        files, added, deleted = dict(found.files), [], []
        for line in lines[1:]:
            key, value = line["key"], line["value"]
            if key == "file":
                raw = value["content"]
                files[value["path"]] = base64.b64decode(raw) if value.get("encoding") == "base64" else raw.encode()
                added.append(value["path"])
            elif key == "deletedFile":
                if files.pop(value["path"], None) is None:
                    return _error(404, "EntryNotFound", "A file with this name doesn't exist")
                deleted.append(value["path"])
            elif key == "deletedFolder":
                prefix = value["path"].rstrip("/") + "/"
                deleted += [p for p in files if p.startswith(prefix)]
                files = {p: c for p, c in files.items() if not p.startswith(prefix)}
            else:
                return _error(400, "BadRequest", f"the fake hub does not accept {key!r} operations (no LFS)")
        found.head = _sha1(found.head + json.dumps(header, sort_keys=True) + json.dumps(sorted(added + deleted)))
        found.files = files
        found.commits.append({"oid": found.head, "summary": header["summary"], "added": added, "deleted": deleted})
        prefix = "" if kind == "models" else kind + "/"
        return _json(
            200,
            {
                "commitUrl": f"{HUB_URL}/{prefix}{repo}/commit/{found.head}",
                "commitOid": found.head,
                "pullRequestUrl": None,
            },
        )

    def _repo_info(self, kind: str, repo: str, rev: str = "main", **_) -> Response:
        found = self._find(kind, repo, rev)
        if isinstance(found, tuple):
            return found
        siblings = [{"rfilename": path, "size": len(content)} for path, content in sorted(found.files.items())]
        return _json(200, {"id": repo, "sha": found.head, "private": found.private, "siblings": siblings})

    def _tree(self, kind: str, repo: str, rev: str, path: str = "", **_) -> Response:
        found = self._find(kind, repo, rev)
        if isinstance(found, tuple):
            return found
        prefix = path.rstrip("/") + "/" if path else ""
        entries = [
            {"type": "file", "path": name, "size": len(content), "oid": _git_blob_oid(content)}
            for name, content in sorted(found.files.items())
            if name.startswith(prefix)
        ]
        return 200, {"Content-Type": "application/json"}, json.dumps(entries).encode()

    def _resolve(self, repo: str, rev: str, path: str, head_only: bool, kind: str = "models", **_) -> Response:
        found = self._find(kind, repo, rev)
        if isinstance(found, tuple):
            return found
        if path not in found.files:
            return _error(404, "EntryNotFound", f"{path} does not exist on {rev}")
        content = found.files[path]
        headers = {
            "X-Repo-Commit": found.head,
            "ETag": f'"{_git_blob_oid(content)}"',
            "Content-Length": str(len(content)),
            "Content-Type": "application/octet-stream",
        }
        return 200, headers, b"" if head_only else content

    def _find(self, kind: str, repo: str, rev: str) -> _Repo | Response:
        found = self._repos.get((_TYPES[kind], repo))
        if found is None:
            return _error(404, "RepoNotFound", f"Repository {repo} not found")
        if rev not in ("main", found.head):
            return _error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        return found


def _handler_class(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            status, headers, content = hub.handle(self.command, self.path.split("?")[0], self.headers, body)
            self.send_response(status)
            headers.setdefault("Content-Length", str(len(content)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(content)

        do_GET = do_POST = do_HEAD = _serve

        def log_message(self, format, *args) -> None:  # keep pytest output clean
            pass

    return Handler


def _json(status: int, payload: dict, headers: dict[str, str] | None = None) -> Response:
    return status, {"Content-Type": "application/json", **(headers or {})}, json.dumps(payload).encode()


def _error(status: int, code: str, message: str) -> Response:
    return _json(status, {"error": message}, {"X-Error-Code": code, "X-Error-Message": message})


def _sha1(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


def _git_blob_oid(content: bytes) -> str:
    """The git object id of a blob, which is what the Hub reports (and the client compares) for regular files."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@pytest.fixture
def fake_hub(monkeypatch) -> Iterator[FakeHub]:
    """A running `FakeHub`; HF_TOKEN is set to its token so pushes without an explicit token authenticate."""
    monkeypatch.setenv("HF_TOKEN", FakeHub.token)
    with FakeHub() as hub:
        yield hub
