"""fetch_url against real local HTTP servers.

The happy paths need an address the tool may reach: a server on 127.0.0.2 (all of 127/8 is
loopback on Linux) with FETCH_URL_ALLOWED_NETWORKS allowing just that address. A second server
on 127.0.0.1 stands for the owner's private network: every refusal asserts it saw no request.
"""

import datetime
import json
import socket
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
)
from cryptography.x509.oid import NameOID
from django.test import override_settings

from agents.tools import RESULT_CHARS_FOR_MODEL, ToolScope, ToolSet
from agents.tools import fetch_url as module
from agents.tools.fetch_url import TOOL

ALLOWED_HOST = "127.0.0.2"
HTML = b"""<html><head><title>Hearth news</title><style>body { color: red }</style>
<script>alert("boo")</script></head><body><h1>Hello</h1><p>The fire is <b>warm</b>&amp;bright.</p>
<noscript>enable js</noscript><ul><li>one</li><li>two</li></ul></body></html>"""


class Recorder(BaseHTTPRequestHandler):
    """Answers from server.routes {path: (status, headers, body) or server -> that}; records requests."""

    def do_GET(self):
        self.server.requests.append({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}})
        route = self.server.routes.get(self.path, (404, {"Content-Type": "text/plain"}, b"not found"))
        status, headers, body = route(self.server) if callable(route) else route
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        if isinstance(body, bytes):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            for piece in [body] if isinstance(body, bytes) else body:  # else a generator: dripped
                self.wfile.write(piece)
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up, as it should

    def log_message(self, *args):
        pass


@pytest.fixture
def serve():
    servers = []

    def start(host, routes, tls=None):
        server = ThreadingHTTPServer((host, 0), Recorder)
        server.daemon_threads, server.block_on_close = True, False
        server.routes, server.requests, server.release = routes, [], threading.Event()
        if tls:
            server.socket = tls.wrap_socket(server.socket, server_side=True)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.release.set()
        server.shutdown()
        server.server_close()


@pytest.fixture
def allowed(serve):
    with override_settings(FETCH_URL_ALLOWED_NETWORKS=[f"{ALLOWED_HOST}/32"]):
        yield serve(ALLOWED_HOST, {})


@pytest.fixture
def private(serve):
    return serve("127.0.0.1", {"/": (200, {"Content-Type": "text/plain"}, b"the owner's secret")})


@pytest.fixture
def fetch(tmp_path):
    scope = ToolScope(owner_id=1, thread_id=1, agent_id=1, workspace=tmp_path)

    def call(url, **extra):
        return ToolSet([TOOL], scope).call("fetch_url", json.dumps({"url": url, **extra}))

    return call


def base(server, host=None, scheme="http"):
    return f"{scheme}://{host or server.server_address[0]}:{server.server_port}"


def test_it_returns_html_as_readable_text(allowed, fetch):
    allowed.routes["/page"] = (200, {"Content-Type": "text/html; charset=utf-8"}, HTML)

    result = fetch(base(allowed) + "/page")

    answer = json.loads(result.content)
    assert not result.is_error
    assert answer["url"] == base(allowed) + "/page"
    assert (answer["status"], answer["content_type"], answer["truncated"]) == (200, "text/html", False)
    assert answer["text"] == "Hearth news\nHello\nThe fire is warm&bright.\none\ntwo"


def test_it_sends_no_credentials_and_names_itself(allowed, fetch):
    allowed.routes["/"] = (200, {"Content-Type": "text/plain"}, b"ok")

    fetch(base(allowed) + "/")

    headers = allowed.requests[0]["headers"]
    assert headers["user-agent"] == "Hearth/0.1 (fetch_url)"
    assert headers["host"] == f"{ALLOWED_HOST}:{allowed.server_port}"
    assert not {"cookie", "authorization", "proxy-authorization"} & set(headers)


def test_it_returns_json_as_is(allowed, fetch):
    allowed.routes["/data"] = (200, {"Content-Type": "application/json"}, b'{"temperature": 21.5}')

    answer = json.loads(fetch(base(allowed) + "/data").content)

    assert answer["content_type"] == "application/json"
    assert json.loads(answer["text"]) == {"temperature": 21.5}


def test_it_stops_reading_at_the_body_cap(allowed, fetch, monkeypatch):
    monkeypatch.setattr(module, "MAX_BODY_BYTES", 1000)
    allowed.routes["/big"] = (200, {"Content-Type": "text/plain"}, b"a" * 50_000)

    answer = json.loads(fetch(base(allowed) + "/big").content)

    assert answer["truncated"] is True
    assert answer["text"].split("\n")[0] == "a" * 1000
    assert "[truncated" in answer["text"]


def test_it_returns_the_text_a_page_at_a_time(allowed, fetch):
    text = "".join(chr(ord("a") + n % 26) for n in range(module.MAX_TEXT_CHARS * 2 + 10))
    allowed.routes["/long"] = (200, {"Content-Type": "text/plain"}, text.encode())

    first = json.loads(fetch(base(allowed) + "/long").content)
    last = json.loads(fetch(base(allowed) + "/long", offset=2 * module.MAX_TEXT_CHARS).content)

    assert (first["truncated"], first["total_chars"], first["next_offset"]) == (True, len(text), module.MAX_TEXT_CHARS)
    assert first["text"].split("\n")[0] == text[: module.MAX_TEXT_CHARS]
    assert f"offset {module.MAX_TEXT_CHARS}" in first["text"]
    assert (last["text"], last["truncated"], last["next_offset"]) == (text[-10:], False, None)


def test_an_offset_past_the_end_is_an_error(allowed, fetch):
    allowed.routes["/short"] = (200, {"Content-Type": "text/plain"}, b"tiny")

    result = fetch(base(allowed) + "/short", offset=100)

    assert result.is_error and "past the end" in result.content


def test_a_page_fits_in_what_the_model_is_sent():
    assert module.MAX_TEXT_CHARS + 1000 < RESULT_CHARS_FOR_MODEL


def test_it_reports_an_error_status_with_the_page(allowed, fetch):
    answer = json.loads(fetch(base(allowed) + "/missing").content)

    assert (answer["status"], answer["text"]) == (404, "not found")


def test_it_refuses_what_is_not_text(allowed, fetch):
    allowed.routes["/cat.png"] = (200, {"Content-Type": "image/png"}, b"\x89PNG\r\n\x1a\n")

    result = fetch(base(allowed) + "/cat.png")

    assert result.is_error
    assert "image/png" in result.error and "not text" in result.error


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.com/x", "javascript:alert(1)", "example.com/page"])
def test_it_refuses_other_schemes(fetch, url):
    result = fetch(url)

    assert result.is_error
    assert "Only http:// and https://" in result.error


@pytest.mark.parametrize("host", [
    "127.0.0.1", "localhost", "[::ffff:127.0.0.1]", "2130706433", "127.1", "0x7f.0.0.1",
])
def test_it_refuses_names_and_spellings_of_loopback(private, fetch, host):
    result = fetch(base(private, host) + "/")

    assert result.is_error
    assert "Refused" in result.error
    assert private.requests == []


def test_it_refuses_an_octal_address(private, fetch):
    result = fetch(base(private, "0177.0.0.1") + "/")

    assert result.is_error
    assert private.requests == []


@pytest.mark.parametrize("url", [
    "http://[::1]/",
    "http://169.254.169.254/latest/meta-data/",
    "http://[fd00:ec2::254]/",
    "http://10.0.0.1/",
    "http://172.16.5.4/",
    "http://192.168.1.1/",
    "http://0.0.0.0/",
    "http://100.100.100.200/",  # shared address space (cloud metadata on some providers)
    "http://224.0.0.1/",
    "http://[fe80::1]/",
    "http://[::127.0.0.1]/",  # IPv4-compatible
    "http://[2002:7f00:1::]/",  # 6to4 around 127.0.0.1
    "http://[64:ff9b::a00:1]/",  # NAT64 around 10.0.0.1
])
def test_it_refuses_private_and_special_addresses(fetch, url):
    result = fetch(url)

    assert result.is_error
    assert "Refused" in result.error


def test_without_an_allowance_the_test_server_is_refused_too(allowed, fetch):
    allowed.routes["/"] = (200, {"Content-Type": "text/plain"}, b"ok")

    with override_settings(FETCH_URL_ALLOWED_NETWORKS=[]):
        result = fetch(base(allowed) + "/")

    assert "Refused" in result.error
    assert allowed.requests == []


def test_it_refuses_credentials_in_the_url(allowed, fetch):
    result = fetch(f"http://user:secret@{ALLOWED_HOST}:{allowed.server_port}/")

    assert "user name or password" in result.error
    assert allowed.requests == []


def test_it_ignores_proxies_from_the_environment(allowed, private, fetch, monkeypatch):
    # A proxy would resolve the name itself, after our check.
    monkeypatch.setenv("HTTP_PROXY", base(private))
    monkeypatch.setenv("ALL_PROXY", base(private))
    allowed.routes["/"] = (200, {"Content-Type": "text/plain"}, b"direct")

    answer = json.loads(fetch(base(allowed) + "/").content)

    assert answer["text"] == "direct"
    assert private.requests == []


def test_it_refuses_a_redirect_into_the_private_network(allowed, private, fetch):
    allowed.routes["/go"] = (302, {"Location": base(private) + "/"}, b"")

    result = fetch(base(allowed) + "/go")

    assert "Refused" in result.error and "127.0.0.1" in result.error
    assert len(allowed.requests) == 1
    assert private.requests == []


def test_it_follows_redirects_without_carrying_cookies(allowed, fetch):
    allowed.routes["/old"] = (301, {"Location": "/new", "Set-Cookie": "session=abc"}, b"")
    allowed.routes["/new"] = (200, {"Content-Type": "text/plain"}, b"moved here")

    answer = json.loads(fetch(base(allowed) + "/old").content)

    assert (answer["url"], answer["text"]) == (base(allowed) + "/new", "moved here")
    assert [r["path"] for r in allowed.requests] == ["/old", "/new"]
    assert "cookie" not in allowed.requests[1]["headers"]


def test_it_stops_a_redirect_loop(allowed, fetch):
    allowed.routes["/loop"] = (302, {"Location": "/loop"}, b"")

    result = fetch(base(allowed) + "/loop")

    assert f"more than {module.MAX_REDIRECTS} times" in result.error
    assert len(allowed.requests) == module.MAX_REDIRECTS + 1


def test_it_gives_up_on_a_slow_server_within_its_deadline(allowed, fetch, monkeypatch):
    monkeypatch.setattr(module, "DEADLINE_SECONDS", 0.5)
    allowed.routes["/slow"] = lambda server: server.release.wait(10) and (200, {"Content-Type": "text/plain"}, b"late")

    started = time.monotonic()
    result = fetch(base(allowed) + "/slow")

    assert "did not answer in time" in result.error
    assert time.monotonic() - started < 3


def test_it_gives_up_on_a_body_that_trickles_past_the_deadline(allowed, fetch, monkeypatch):
    # Every read succeeds within the read timeout; only the overall deadline can stop this.
    monkeypatch.setattr(module, "DEADLINE_SECONDS", 0.5)

    def trickle(server):
        for _ in range(100):
            yield b"x"
            if server.release.wait(0.05):
                return

    allowed.routes["/trickle"] = lambda server: (200, {"Content-Type": "text/plain"}, trickle(server))

    started = time.monotonic()
    result = fetch(base(allowed) + "/trickle")

    assert "Stopped after 0.5 seconds" in result.error
    assert time.monotonic() - started < 3


def resolving(mapping, monkeypatch):
    """DNS as the process edge: each lookup of a name in `mapping` takes the next address of its
    list, the last one sticking."""
    real = socket.getaddrinfo
    answers = {name: list(addresses) for name, addresses in mapping.items()}

    def getaddrinfo(host, port, *args, **kwargs):
        queue = answers.get(host)
        if queue:
            host = queue.pop(0) if len(queue) > 1 else queue[0]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def test_it_connects_to_the_address_it_checked(allowed, private, fetch, monkeypatch):
    # DNS rebinding: the name is public when checked and private when asked again.
    resolving({"rebind.test": [ALLOWED_HOST, "127.0.0.1"]}, monkeypatch)
    allowed.routes["/"] = (200, {"Content-Type": "text/plain"}, b"public")

    answer = json.loads(fetch(f"http://rebind.test:{allowed.server_port}/").content)

    assert answer["text"] == "public"
    assert allowed.requests[0]["headers"]["host"] == f"rebind.test:{allowed.server_port}"
    assert private.requests == []


def tls_for(name, folder):
    """(client context trusting a fresh CA, server context with that CA's certificate for `name`)."""
    now = datetime.datetime.now(datetime.timezone.utc)

    def signed(subject, key, issuer_key, issuer, extension):
        builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
                   .not_valid_after(now + datetime.timedelta(hours=1)).add_extension(extension, critical=True))
        return builder.sign(issuer_key, hashes.SHA256())

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Hearth test CA")])
    ca = signed(ca_name, ca_key, ca_key, ca_name, x509.BasicConstraints(ca=True, path_length=None))
    leaf = signed(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]), key, ca_key, ca_name,
                  x509.SubjectAlternativeName([x509.DNSName(name)]))
    (folder / "cert.pem").write_bytes(leaf.public_bytes(Encoding.PEM))
    (folder / "key.pem").write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(folder / "cert.pem", folder / "key.pem")
    return ssl.create_default_context(cadata=ca.public_bytes(Encoding.PEM).decode()), server


@pytest.mark.parametrize(("certified", "ok"), [("pinned.test", True), ("someone-else.test", False)])
def test_https_checks_the_certificate_against_the_name_not_the_address(serve, fetch, monkeypatch, tmp_path, certified, ok):
    client, server_tls = tls_for(certified, tmp_path)
    monkeypatch.setattr(module, "TLS_VERIFY", client)
    resolving({"pinned.test": [ALLOWED_HOST]}, monkeypatch)
    with override_settings(FETCH_URL_ALLOWED_NETWORKS=[f"{ALLOWED_HOST}/32"]):
        server = serve(ALLOWED_HOST, {"/": (200, {"Content-Type": "text/plain"}, b"secure")}, tls=server_tls)
        result = fetch(f"https://pinned.test:{server.server_port}/")

    assert result.is_error is not ok
    if ok:
        assert json.loads(result.content)["text"] == "secure"
        assert server.requests[0]["headers"]["host"] == f"pinned.test:{server.server_port}"
    else:
        assert "certificate" in result.error.lower()
        assert server.requests == []
