"""The page's assets: vendored and pinned (checksums match VERSIONS.md), nothing from a CDN, served with a CSP."""

import hashlib
import os
import re

import httpx

from hessgpt.serve.api import WEB_DIR
from hessgpt.serve.backends import ScriptedBackend

VENDOR = os.path.join(WEB_DIR, "vendor")


def test_vendored_files_match_their_pinned_checksums():
    rows = re.findall(r"^\| (\S+) \| .*? \| ([0-9a-f]{64}) \|$", open(os.path.join(VENDOR, "VERSIONS.md")).read(), re.M)
    assert {name for name, _ in rows} == {f for f in os.listdir(VENDOR) if f.endswith((".js", ".css"))}
    for name, digest in rows:
        assert hashlib.sha256(open(os.path.join(VENDOR, name), "rb").read()).hexdigest() == digest, name
    for lic in ("LICENSE.marked", "LICENSE.dompurify", "LICENSE.highlightjs"):
        assert os.path.getsize(os.path.join(VENDOR, lic)) > 500


def test_page_loads_nothing_from_outside():
    for name in ("index.html", "app.js", "style.css"):
        text = open(os.path.join(WEB_DIR, name)).read()
        assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//|url\(\s*["']?(https?:)?//|@import""", text), name
    html = open(os.path.join(WEB_DIR, "index.html")).read()
    assert "<script>" not in html and not re.search(r"\son[a-z]+\s*=", html)  # CSP-compatible: no inline code


def test_page_and_assets_are_served_with_csp(serve):
    srv = serve(ScriptedBackend(model_id="tiny"))
    r = httpx.get(srv.url + "/")
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "object-src 'none'" in csp and "unsafe-eval" not in csp
    assert r.headers["x-content-type-options"] == "nosniff"
    for asset in re.findall(r'(?:src|href)="(/static/[^"]+)"', r.text):
        a = httpx.get(srv.url + asset)
        assert a.status_code == 200 and len(a.content) > 100, asset
