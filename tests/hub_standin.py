"""A stand-in Hugging Face hub on loopback: serves the files of local folders as repositories,
with the endpoints and headers huggingface_hub reads (revision info, tree, resolve)."""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

SHA = "0123456789abcdef0123456789abcdef01234567"


class StandInHub:
    def __init__(self, repos: dict[str, Path], gated: tuple[str, ...] = ()):
        self.repos, self.gated, self.requests = repos, gated, []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_HEAD(self):
                self._serve(body=False)

            def do_GET(self):
                self._serve(body=True)

            def _send(self, status, data=b"", headers=None, body=True):
                self.send_response(status)
                for k, v in {"Content-Length": str(len(data)), **(headers or {})}.items():
                    self.send_header(k, v)
                self.end_headers()
                if body:
                    self.wfile.write(data)

            def _error(self, status, code, body):
                self._send(status, json.dumps({"error": code}).encode(), {"X-Error-Code": code}, body)

            def _serve(self, body):
                path = unquote(urlparse(self.path).path)
                hub.requests.append(path)
                parts = path.strip("/").split("/")
                api = parts[:2] == ["api", "models"]
                repo = "/".join(parts[2:4] if api else parts[0:2])
                if repo in hub.gated:
                    return self._error(403, "GatedRepo", body)
                if repo not in hub.repos:
                    return self._error(404, "RepoNotFound", body)
                folder = hub.repos[repo]
                files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
                if api and parts[4:5] == ["revision"]:
                    info = {"id": repo, "sha": SHA, "siblings": [{"rfilename": f} for f in files]}
                    return self._send(200, json.dumps(info).encode(), {"Content-Type": "application/json"}, body)
                if api and parts[4:5] == ["tree"]:
                    tree = [{"type": "file", "path": f, "size": (folder / f).stat().st_size, "oid": SHA} for f in files]
                    return self._send(200, json.dumps(tree).encode(), {"Content-Type": "application/json"}, body)
                if not api and parts[2:3] == ["resolve"]:
                    name = "/".join(parts[4:])
                    if name not in files:
                        return self._error(404, "EntryNotFound", body)
                    data = (folder / name).read_bytes()
                    etag = hashlib.sha256(data).hexdigest()
                    return self._send(200, data, {"X-Repo-Commit": SHA, "ETag": f'"{etag}"'}, body)
                return self._error(404, "EntryNotFound", body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "StandInHub":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
