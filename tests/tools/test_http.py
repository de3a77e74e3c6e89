"""SSRF protection of http_request, against a real HTTP server on 127.0.0.1 (no internet needed)."""

import ipaddress
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from hessgpt.tools.http import HttpError, HttpFetcher, blocked_reason, http_tool
from hessgpt.tools.registry import ToolRegistry


class _Handler(BaseHTTPRequestHandler):
    hits: list[str] = []

    def log_message(self, *args):
        pass

    def _send(self, code, body=b"", headers=()):
        self.send_response(code)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self.hits.append(self.path)
        port = self.server.server_address[1]
        if self.path == "/ok":
            self._send(200, "bonjour, café".encode(), [("Content-Type", "text/plain; charset=utf-8")])
        elif self.path == "/host":
            self._send(200, self.headers["Host"].encode())
        elif self.path == "/big":
            self._send(200, b"x" * 100_000)
        elif self.path == "/slow":
            time.sleep(3)
            self._send(200, b"late")
        elif self.path == "/drip":   # headers at once, then one byte every 0.3 s
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            for _ in range(100):
                try:
                    self.wfile.write(b"x")
                    self.wfile.flush()
                except OSError:
                    return
                time.sleep(0.3)
        elif self.path.startswith("/redirect?to="):
            self._send(302, headers=[("Location", self.path.split("=", 1)[1].replace("PORT", str(port)))])
        elif self.path == "/loop":
            self._send(302, headers=[("Location", "/loop")])
        else:
            self._send(404, b"not found")


@pytest.fixture()
def server():
    _Handler.hits = []
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.daemon_threads = True
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv.server_address[1]
    srv.shutdown()
    srv.server_close()


def _public_standin(port, **kw):
    """A fetcher where the (unresolvable) name public.test resolves to the loopback test server.
    The resolver counts its calls: the connection must use the checked address, not resolve again."""
    calls = []

    def resolver(host, p):
        calls.append(host)
        assert host == "public.test"
        return ["127.0.0.1"]

    kw.setdefault("allowed_hosts", ["public.test"])
    f = HttpFetcher(allowed_ports=None, resolver=resolver, allow_private_for_tests=["127.0.0.1"], **kw)
    return f, calls


def test_loopback_server_refused_by_default(server):
    # Even with the host on the allowlist and any port allowed, 127.0.0.1 and localhost are refused.
    f = HttpFetcher(allowed_hosts=["127.0.0.1", "localhost", "2130706433", "0.0.0.0"], allowed_ports=None)
    for url in (f"http://127.0.0.1:{server}/ok", f"http://localhost:{server}/ok",
                f"http://2130706433:{server}/ok", f"http://0.0.0.0:{server}/ok"):
        with pytest.raises(HttpError, match="loopback|unspecified|private"):
            f.request(url)
    assert _Handler.hits == []   # the server never saw a request


@pytest.mark.parametrize("addr", [
    "10.0.0.1", "172.16.5.4", "192.168.1.1", "169.254.169.254", "100.64.0.1", "224.0.0.1",
    "[::1]", "[::ffff:127.0.0.1]", "[::ffff:7f00:1]", "[::ffff:169.254.169.254]", "[fd00:ec2::254]",
    "[fe80::1]", "[::]", "[64:ff9b::a00:1]", "[2002:7f00:1::]", "[::7f00:1]",
])
def test_private_and_mapped_addresses_refused(addr):
    f = HttpFetcher(allowed_hosts=["*"], allowed_ports=None)
    with pytest.raises(HttpError, match="refused"):
        f.request(f"http://{addr}/")


def test_name_resolving_to_private_refused():
    # The check runs on the resolved addresses: a public-looking name pointing at 10.x is refused,
    # and so is a name with one good and one bad address.
    f = HttpFetcher(allowed_hosts=["*"], resolver=lambda h, p: ["93.184.215.14", "10.1.2.3"])
    with pytest.raises(HttpError, match="resolves to 10.1.2.3, a private address"):
        f.request("http://example.com/")


def test_blocked_reason_public_addresses_pass():
    for a in ("8.8.8.8", "1.1.1.1", "2001:4860:4860::8888", "2606:4700:4700::1111"):
        assert blocked_reason(ipaddress.ip_address(a)) is None


def test_allowlist_scheme_port_credentials():
    f = HttpFetcher(allowed_hosts=["api.example.com", "*.wiki.org"], resolver=lambda h, p: ["93.184.215.14"])
    with pytest.raises(HttpError, match="not on the allowlist"):
        f.request("http://evil.com/")
    with pytest.raises(HttpError, match="only http and https"):
        f.request("file:///etc/passwd")
    with pytest.raises(HttpError, match="port 22 is not allowed"):
        f.request("http://api.example.com:22/")
    with pytest.raises(HttpError, match="credentials"):
        f.request("http://user:pw@api.example.com/")
    with pytest.raises(HttpError, match="allowlist"):
        HttpFetcher().request("http://api.example.com/")   # empty allowlist = nothing allowed
    assert f.check_url("https://fr.wiki.org/x?q=1")[1:4] == ("fr.wiki.org", 443, "/x?q=1")


def test_allowed_request_connects_to_checked_address(server):
    f, calls = _public_standin(server)
    r = f.request(f"http://public.test:{server}/ok")
    assert (r.status, r.body, r.truncated) == (200, "bonjour, café", False)
    assert calls == ["public.test"]   # resolved once; the socket went to the checked IP
    assert f.request(f"http://public.test:{server}/host").body == f"public.test:{server}"


def test_redirect_to_private_refused_hop_by_hop(server):
    f, _ = _public_standin(server, allowed_hosts=["public.test", "*"])
    for target in ("http://10.0.0.1/", "http://169.254.169.254/latest/meta-data/",
                   "http://[::ffff:127.0.0.2]/", "http://127.0.0.2:PORT/ok"):
        with pytest.raises(HttpError, match="refused"):
            f.request(f"http://public.test:{server}/redirect?to={target}")
    # a redirect to a host that is not on the allowlist is refused too
    g, _ = _public_standin(server)
    with pytest.raises(HttpError, match="not on the allowlist"):
        g.request(f"http://public.test:{server}/redirect?to=http://other.test/")
    # an allowed redirect is followed
    r = g.request(f"http://public.test:{server}/redirect?to=/ok")
    assert r.body == "bonjour, café" and r.redirects == [f"http://public.test:{server}/redirect?to=/ok"]
    with pytest.raises(HttpError, match="too many redirects"):
        g.request(f"http://public.test:{server}/loop")


def test_size_cap(server):
    f, _ = _public_standin(server, max_bytes=1000)
    r = f.request(f"http://public.test:{server}/big")
    assert r.truncated and len(r.body) == 1000


def test_timeouts(server):
    f, _ = _public_standin(server, timeout=0.5)
    t0 = time.monotonic()
    with pytest.raises(HttpError, match="timed out"):
        f.request(f"http://public.test:{server}/slow")
    with pytest.raises(HttpError, match="timed out"):
        f.request(f"http://public.test:{server}/drip")   # each byte arrives in time, the total does not
    assert time.monotonic() - t0 < 3


def test_http_tool_returns_errors_as_results(server):
    f, _ = _public_standin(server)
    reg = ToolRegistry([http_tool(f)])
    ok = json.loads(reg.call("http_request", {"url": f"http://public.test:{server}/ok"}))
    assert ok["status"] == 200 and ok["body"] == "bonjour, café"
    err = json.loads(reg.call("http_request", {"url": "http://169.254.169.254/"}))
    assert "not on the allowlist" in err["error"]
    bad = json.loads(reg.call("http_request", {"url": "http://public.test/", "method": "DELETE"}))
    assert "is not one of" in bad["error"]
