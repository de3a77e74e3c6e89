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


NODE_HARNESS = r"""
const fs = require("fs"), vm = require("vm");
const store = {}, elems = {};
const fakeEl = () => ({ value: "", textContent: "", placeholder: "", hidden: false, dataset: {}, classList: { toggle() {} },
                        addEventListener() {}, querySelectorAll: () => [], appendChild() {} });
const ctx = {
  localStorage: { getItem: (k) => (k in store ? store[k] : null), setItem: (k, v) => (store[k] = String(v)), removeItem: (k) => delete store[k] },
  navigator: { language: "fr-FR" }, console,
  document: { addEventListener() {}, getElementById: (id) => (elems[id] = elems[id] || fakeEl()), querySelectorAll: () => [] },
};
ctx.localStorage.setItem("hessgpt.settings", process.env.HESSGPT_SETTINGS);
ctx.__messages = JSON.parse(process.env.HESSGPT_MESSAGES);
vm.createContext(ctx);
vm.runInContext(fs.readFileSync(process.env.HESSGPT_APP_JS, "utf8") + `
  ;globalThis.__out = {
    history: apiMessages({ messages: globalThis.__messages }),
    sampling: samplingFields(state.settings),
  };`, ctx);
process.stdout.write(JSON.stringify(ctx.__out));
"""


def run_page_js(messages, settings):
    import json
    import shutil
    import subprocess

    import pytest

    node = shutil.which("node")
    if node is None:
        pytest.skip("no node to run the page's script")
    r = subprocess.run([node, "-e", NODE_HARNESS], capture_output=True, text=True, timeout=30,
                       env={**os.environ, "HESSGPT_APP_JS": os.path.join(WEB_DIR, "app.js"),
                            "HESSGPT_SETTINGS": json.dumps(settings), "HESSGPT_MESSAGES": json.dumps(messages)})
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_page_sends_an_earlier_tool_turn_as_one_plain_message_and_no_sampling_by_default():
    """The page's own functions (app.js, run by node): history as the eval renders it, and sampling left to the
    checkpoint's generation_config unless the user set it (old saved settings with 0.7 / 0.95 are dropped)."""
    tool_turn = {"role": "assistant", "parts": [
        {"kind": "text", "text": "Je lance un petit script."}, {"kind": "code", "text": "print(10 * 10)", "data": {}},
        {"kind": "result", "text": "100\n", "data": {"status": "ok"}}, {"kind": "text", "text": "Résultat : 100."}]}
    msgs = [{"role": "user", "content": "Calcule 10 * 10"}, tool_turn, {"role": "user", "content": "Et la capitale de l'Italie ?"}]
    out = run_page_js(msgs, {"system": "", "temperature": 0.7, "top_p": 0.95, "max_tokens": 1024})  # pre-v2 settings
    assert out["history"] == [{"role": "user", "content": "Calcule 10 * 10"},
                              {"role": "assistant", "content": "Je lance un petit script.\n\nRésultat : 100."},
                              {"role": "user", "content": "Et la capitale de l'Italie ?"}]
    assert out["sampling"] == {}  # nothing sent: the server's (checkpoint's) defaults apply
    out = run_page_js(msgs[:1], {"v": 2, "system": "", "temperature": "0.3", "top_p": None, "max_tokens": "77"})
    assert out["sampling"] == {"temperature": 0.3, "max_tokens": 77}
    # an already spaced answer (the router's "\n\n" at the start of the text after the result) stays the same
    spaced = {"role": "assistant", "parts": [tool_turn["parts"][0], tool_turn["parts"][1],
                                             {"kind": "text", "text": "\n\nRésultat : 100."}]}
    out = run_page_js([msgs[0], spaced], {"v": 2})
    assert out["history"][1]["content"] == "Je lance un petit script.\n\nRésultat : 100."
