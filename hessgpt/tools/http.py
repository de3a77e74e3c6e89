"""`http_request`: HTTP function calling that cannot be turned against the machine it runs on (SSRF).

Every hop (the first URL and each redirect) goes through the same checks, in this order:
  1. scheme http/https, no user:password@ in the URL, port allowed (80/443 by default);
  2. host on the allowlist (`allowed_hosts`: exact names, `*.example.com` for subdomains, `*` for any
     public host; empty = nothing is allowed);
  3. DNS resolution ONCE, then every resolved address checked: loopback, private (10/8, 172.16/12,
     192.168/16, fc00::/7), link-local (169.254/16 incl. the cloud metadata 169.254.169.254, fe80::/10),
     carrier-grade NAT, multicast, reserved, unspecified (0.0.0.0, ::), IPv4-mapped IPv6 (::ffff:a.b.c.d),
     6to4/NAT64/IPv4-compatible forms that embed a blocked IPv4, Teredo, and fd00:ec2::254 are refused;
  4. the socket connects to the address that was checked (not to the name, which could resolve to
     something else a millisecond later: DNS rebinding); HTTPS still verifies the certificate for the name.
Redirects are followed by hand (max 5), each one re-checked from step 1. A total deadline bounds the
whole request (slow-drip servers included) and the body is read up to `max_bytes` (then cut, with
`truncated=True`); compressed bodies are not requested, so the cap is on real bytes.

    fetcher = HttpFetcher(allowed_hosts=["api.open-meteo.com"])
    r = fetcher.request("https://api.open-meteo.com/v1/forecast?latitude=48.85&longitude=2.35&current=temperature_2m")
    r.status, r.body

Tests: `allow_private_for_tests={"127.0.0.1"}` exempts listed addresses so a loopback server can stand
in for a public host (with an injected `resolver`). Never set it in real use.
"""

import http.client
import ipaddress
import json
import socket
import ssl
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable
from urllib.parse import urljoin, urlsplit

from hessgpt.tools.registry import Tool

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

METADATA_ADDRESSES = {
    ipaddress.ip_address("169.254.169.254"),   # AWS, GCP, Azure, OpenStack
    ipaddress.ip_address("fd00:ec2::254"),     # AWS IPv6 metadata
    ipaddress.ip_address("100.100.100.200"),   # Alibaba Cloud
    ipaddress.ip_address("169.254.170.2"),     # AWS ECS task metadata
}
_NAT64 = [ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48")]
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
REDIRECT_CODES = (301, 302, 303, 307, 308)


class HttpError(Exception):
    """The request was refused (SSRF check, allowlist, scheme...) or failed (timeout, connection)."""


def blocked_reason(ip: Address) -> str | None:
    """Why this address must not be contacted, or None if it is a public unicast address."""
    if ip in METADATA_ADDRESSES:
        return "cloud metadata address"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return f"IPv4-mapped IPv6 address (embeds {ip.ipv4_mapped})"
        if ip.teredo is not None:
            return "Teredo tunnel address"
        if ip.sixtofour is not None and blocked_reason(ip.sixtofour):
            return f"6to4 address embedding {ip.sixtofour} ({blocked_reason(ip.sixtofour)})"
        if any(ip in net for net in _NAT64):
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
            if blocked_reason(embedded):
                return f"NAT64 address embedding {embedded} ({blocked_reason(embedded)})"
        if int(ip) >> 32 == 0 and int(ip) > 1:   # deprecated IPv4-compatible ::a.b.c.d
            return f"IPv4-compatible IPv6 address (embeds {ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)})"
    checks = [
        ("unspecified", ip.is_unspecified), ("loopback", ip.is_loopback), ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast), ("private", ip.is_private), ("reserved", ip.is_reserved),
    ]
    if isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT:
        checks.append(("carrier-grade NAT", True))
    if isinstance(ip, ipaddress.IPv6Address):
        checks.append(("site-local", ip.is_site_local))
    for name, hit in checks:
        if hit:
            return f"{name} address"
    if not ip.is_global:
        return "non-public address"
    return None


def system_resolver(host: str, port: int) -> list[str]:
    """All addresses `host` resolves to (A and AAAA), in the system's order."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise HttpError(f"cannot resolve host {host!r}: {e.strerror or e}") from None
    out: list[str] = []
    for *_, sockaddr in infos:
        if sockaddr[0] not in out:
            out.append(sockaddr[0])
    return out


@dataclass
class HttpResponse:
    url: str                      # the final URL, after redirects
    status: int
    headers: dict[str, str]
    body: str
    truncated: bool = False       # the body was longer than max_bytes and was cut
    redirects: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"url": self.url, "status": self.status, "content_type": self.headers.get("content-type", ""),
                "body": self.body, "truncated": self.truncated}


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """Connects to a pre-checked IP while sending `Host: <name>`."""

    def __init__(self, host: str, port: int, ip: str, timeout: float):
        super().__init__(host, port, timeout=timeout)
        self._ip = ip

    def connect(self):
        self.sock = socket.create_connection((self._ip, self.port), self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.pinned_sock = self.sock   # kept: http.client drops self.sock once the response will close


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """TLS to a pre-checked IP; SNI and certificate verification use the host name."""

    def __init__(self, host: str, port: int, ip: str, timeout: float, context: ssl.SSLContext):
        super().__init__(host, port, timeout=timeout, context=context)
        self._ip = ip
        self._ctx = context

    def connect(self):
        sock = socket.create_connection((self._ip, self.port), self.timeout)
        self.sock = self._ctx.wrap_socket(sock, server_hostname=self.host)
        self.pinned_sock = self.sock


def _host_allowed(host: str, patterns: list[str]) -> bool:
    for p in patterns:
        if p == "*" or p == host:
            return True
        if p.startswith("*.") and host.endswith(p[1:]):
            return True
    return False


class HttpFetcher:
    def __init__(
        self,
        allowed_hosts: Iterable[str] = (),
        *,
        allowed_ports: Iterable[int] | None = (80, 443),
        allowed_methods: Iterable[str] = ("GET", "HEAD", "POST"),
        timeout: float = 10.0,
        max_bytes: int = 1_000_000,
        max_redirects: int = 5,
        resolver: Callable[[str, int], list[str]] | None = None,
        allow_private_for_tests: Iterable[str] = (),
        user_agent: str = "HessGPT-http_request/0.1",
    ):
        self.allowed_hosts = [h.lower().rstrip(".") for h in allowed_hosts]
        self.allowed_ports = None if allowed_ports is None else set(allowed_ports)
        self.allowed_methods = {m.upper() for m in allowed_methods}
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.max_redirects = max_redirects
        self.resolver = resolver or system_resolver
        # Addresses exempt from the SSRF check. For tests with a loopback server ONLY.
        self._test_exempt = {ipaddress.ip_address(a) for a in allow_private_for_tests}
        self.user_agent = user_agent
        self._ssl = ssl.create_default_context()

    # -- checks -----------------------------------------------------------------------------------

    def check_url(self, url: str) -> tuple[str, str, int, str, list[str]]:
        """Validate a URL and resolve it: (scheme, host, port, path?query, checked IPs). Raises HttpError."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as e:
            raise HttpError(f"invalid URL {url!r}: {e}") from None
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https"):
            raise HttpError(f"refused {url!r}: only http and https URLs are allowed")
        if parts.username is not None or parts.password is not None:
            raise HttpError(f"refused {url!r}: credentials in the URL are not allowed")
        host = (parts.hostname or "").rstrip(".")
        if not host:
            raise HttpError(f"refused {url!r}: no host")
        try:
            literal = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            literal = None
        if literal is None:
            try:
                host = host.encode("idna").decode("ascii").lower()
            except UnicodeError:
                raise HttpError(f"refused {url!r}: invalid host name") from None
        port = port or (443 if scheme == "https" else 80)
        if self.allowed_ports is not None and port not in self.allowed_ports:
            raise HttpError(f"refused {url!r}: port {port} is not allowed (allowed: {sorted(self.allowed_ports)})")
        if not _host_allowed(host, self.allowed_hosts):
            allowed = ", ".join(self.allowed_hosts) or "none configured"
            raise HttpError(f"refused {url!r}: host {host!r} is not on the allowlist ({allowed})")
        ips = [str(literal)] if literal is not None else self.resolver(host, port)
        if not ips:
            raise HttpError(f"cannot resolve host {host!r}")
        for raw in ips:
            ip = ipaddress.ip_address(raw.split("%", 1)[0])
            reason = blocked_reason(ip)
            if reason and ip not in self._test_exempt:
                raise HttpError(f"refused {url!r}: {host!r} resolves to {ip}, a {reason}")
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        return scheme, host, port, path, [ips[0].split("%", 1)[0]]

    # -- request ----------------------------------------------------------------------------------

    def request(self, url: str, method: str = "GET", headers: dict[str, str] | None = None,
                body: str | bytes | None = None) -> HttpResponse:
        method = method.upper()
        if method not in self.allowed_methods:
            raise HttpError(f"method {method} is not allowed (allowed: {sorted(self.allowed_methods)})")
        deadline = time.monotonic() + self.timeout
        send_headers = {k: v for k, v in (headers or {}).items()
                        if k.lower() not in ("host", "connection", "accept-encoding", "content-length", "transfer-encoding")}
        send_headers.setdefault("User-Agent", self.user_agent)
        send_headers["Accept-Encoding"] = "identity"
        data = body.encode("utf-8") if isinstance(body, str) else body
        redirects: list[str] = []
        while True:
            scheme, host, port, path, ips = self.check_url(url)
            status, resp_headers, raw, truncated = self._one_hop(scheme, host, port, ips[0], method, path,
                                                                 send_headers, data, deadline)
            location = resp_headers.get("location")
            if status in REDIRECT_CODES and location:
                if len(redirects) >= self.max_redirects:
                    raise HttpError(f"too many redirects (max {self.max_redirects}) from {redirects[0] if redirects else url}")
                redirects.append(url)
                url = urljoin(url, location)
                if status == 303 or (status in (301, 302) and method == "POST"):
                    method, data = "GET", None
                continue
            charset = "utf-8"
            ctype = resp_headers.get("content-type", "")
            if "charset=" in ctype:
                charset = ctype.split("charset=", 1)[1].split(";")[0].strip().strip('"') or "utf-8"
            try:
                text = raw.decode(charset, errors="replace")
            except LookupError:
                text = raw.decode("utf-8", errors="replace")
            return HttpResponse(url=url, status=status, headers=resp_headers, body=text,
                                truncated=truncated, redirects=redirects)

    def _one_hop(self, scheme, host, port, ip, method, path, headers, data, deadline):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise HttpError(f"timed out after {self.timeout:g} s")
        if scheme == "https":
            conn = _PinnedHTTPSConnection(host, port, ip, timeout=remaining, context=self._ssl)
        else:
            conn = _PinnedHTTPConnection(host, port, ip, timeout=remaining)
        try:
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            resp_headers = {k.lower(): v for k, v in resp.getheaders()}
            chunks, size, truncated = [], 0, False
            if method != "HEAD" and resp.status not in REDIRECT_CODES:
                while True:
                    if time.monotonic() > deadline:
                        raise HttpError(f"timed out after {self.timeout:g} s while reading the body")
                    conn.pinned_sock.settimeout(max(0.01, deadline - time.monotonic()))
                    chunk = resp.read1(min(65536, self.max_bytes + 1 - size))
                    if not chunk:
                        break
                    chunks.append(chunk)
                    size += len(chunk)
                    if size > self.max_bytes:
                        truncated = True
                        break
            raw = b"".join(chunks)[: self.max_bytes]
            return resp.status, resp_headers, raw, truncated
        except (socket.timeout, TimeoutError):
            raise HttpError(f"timed out after {self.timeout:g} s") from None
        except ssl.SSLError as e:
            raise HttpError(f"TLS error with {host}: {e.reason or e}") from None
        except (OSError, http.client.HTTPException) as e:
            raise HttpError(f"request to {host} failed: {type(e).__name__}: {e}") from None
        finally:
            conn.close()


def http_tool(fetcher: HttpFetcher):
    """`http_request` as a registry Tool: returns JSON text {url, status, content_type, body, truncated}."""
    def run(url: str, method: str = "GET", headers: dict | None = None, body: str | None = None) -> str:
        try:
            return json.dumps(fetcher.request(url, method, headers, body).to_dict(), ensure_ascii=False)
        except HttpError as e:
            return json.dumps({"error": str(e)}, ensure_ascii=False)

    hosts = ", ".join(fetcher.allowed_hosts) or "none"
    return Tool(
        name="http_request",
        description=f"Make an HTTP request to an allowed host ({hosts}) and return the status and body.",
        parameters={
            "type": "object",
            "properties": {
                "url": {"type": "string", "description": "http:// or https:// URL"},
                "method": {"type": "string", "enum": sorted(fetcher.allowed_methods), "default": "GET"},
                "headers": {"type": "object", "additionalProperties": {"type": "string"}},
                "body": {"type": "string"},
            },
            "required": ["url"],
            "additionalProperties": False,
        },
        fn=run,
    )
