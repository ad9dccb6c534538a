"""fetch_url: read a web page or text document over http(s), never reaching into the owner's network.

Server-side request forgery is the risk: the model chooses the URL, the request leaves from the
owner's machine. So every hop (the first request and each redirect) is checked after DNS: the
host is resolved once, every address it resolves to must be public (see _internal), and the
connection goes to that validated address, with the real name in the Host header and in TLS
(SNI and certificate check). The name is never resolved a second time, which defeats DNS
rebinding. Networks in settings.FETCH_URL_ALLOWED_NETWORKS are the owner's explicit exceptions.
"""

import codecs
import socket
import time
from html.parser import HTMLParser
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network

import httpx2
from django.conf import settings

from . import Tool, ToolInputError

MAX_URL_CHARS = 2048
MAX_REDIRECTS = 5
DEADLINE_SECONDS = 15.0  # the whole fetch, redirects included (checked between reads)
CONNECT_TIMEOUT_SECONDS = 5.0
READ_TIMEOUT_SECONDS = 10.0  # one read; a read started before the deadline may end this much later
MAX_BODY_BYTES = 2_000_000  # raw and decoded; the rest of the body is not read
# A page of text per call, under RESULT_CHARS_FOR_MODEL with room for the JSON around it;
# the model pages on with `offset`.
MAX_TEXT_CHARS = 6_000
USER_AGENT = "Hearth/0.1 (fetch_url)"
TLS_VERIFY = True  # tests put an ssl.SSLContext with their own CA here

_REDIRECT_STATUSES = {301, 302, 303, 307, 308}
_TEXT_MARKERS = ("json", "xml", "javascript", "ecmascript")
_METADATA = {ip_address("169.254.169.254"), ip_address("fd00:ec2::254")}
_SHARED = ip_network("100.64.0.0/10")  # carrier-grade NAT; Python counts it neither private nor global
_NAT64 = ip_network("64:ff9b::/96")


def fetch(url: str, offset: int = 0) -> dict:
    """GET `url`, following up to MAX_REDIRECTS redirects, each hop re-validated.

    Returns {url (final), status, content_type, text, truncated, total_chars, next_offset}:
    MAX_TEXT_CHARS of the page's text from `offset`; HTML comes back as readable text. Raises ToolInputError for a refused or malformed URL, a non-text response, too many
    redirects, a timeout or a network failure. Sends no cookies and no credentials.
    """
    deadline = time.monotonic() + DEADLINE_SECONDS
    current = _parse(url)
    for _ in range(MAX_REDIRECTS + 1):
        addresses = _resolve_public(current)
        answer = _get_pinned(current, addresses, deadline)
        if "location" not in answer:
            return _page(answer, offset)
        current = _parse(answer["location"])
    raise ToolInputError(f"{url} redirected more than {MAX_REDIRECTS} times; stopped. Try the final address directly.")


def _parse(text: str) -> httpx2.URL:
    try:
        url = httpx2.URL(text)
    except (httpx2.InvalidURL, TypeError) as exc:
        raise ToolInputError(f"{text!r} is not a valid URL ({exc}). Give a full URL such as 'https://example.com/page'.") from None
    if url.scheme not in ("http", "https"):
        raise ToolInputError(f"Only http:// and https:// URLs can be fetched, not {url.scheme or 'a URL without a scheme'}: {text!r}.")
    if url.userinfo:
        raise ToolInputError("URLs with a user name or password (user:pass@host) are refused; fetch_url sends no credentials.")
    if not url.raw_host:
        raise ToolInputError(f"{text!r} has no host name.")
    return url


def _resolve_public(url: httpx2.URL) -> list[str]:
    """The addresses `url`'s host resolves to, in resolver order, if every one of them may be reached."""
    host = url.raw_host.decode("ascii")
    try:
        port = url.port or (443 if url.scheme == "https" else 80)
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as exc:
        raise ToolInputError(f"Could not resolve the host {host!r} ({exc}).") from None
    addresses = list(dict.fromkeys(info[4][0] for info in infos))
    allowed = [ip_network(n, strict=False) for n in settings.FETCH_URL_ALLOWED_NETWORKS]
    for address in addresses:
        if not _may_reach(ip_address(address), allowed):
            raise ToolInputError(
                f"Refused: {host} resolves to {address}, a loopback, private, link-local, metadata or otherwise "
                "non-public address. fetch_url only reaches the public internet (the owner can allow a network "
                "with FETCH_URL_ALLOWED_NETWORKS)."
            )
    return addresses


def _may_reach(ip: IPv4Address | IPv6Address, allowed: list) -> bool:
    if isinstance(ip, IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped  # the kernel connects to the IPv4 address itself
    if any(ip in net for net in allowed):
        return True
    return not any(_internal(candidate) for candidate in _with_embedded(ip))


def _with_embedded(ip: IPv4Address | IPv6Address) -> list:
    """The address and the IPv4 addresses tunnelled inside it (6to4, Teredo, NAT64)."""
    found = [ip]
    if isinstance(ip, IPv6Address):
        found += [ip.sixtofour] if ip.sixtofour else []
        found += list(ip.teredo) if ip.teredo else []
        found += [IPv4Address(int(ip) & 0xFFFFFFFF)] if ip in _NAT64 else []
    return found


def _internal(ip: IPv4Address | IPv6Address) -> bool:
    # is_global alone lets multicast through (and its list changes between Python versions).
    return (
        ip in _METADATA or ip in _SHARED or not ip.is_global or ip.is_private
        or ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_reserved or ip.is_unspecified
        or (ip.version == 6 and ip.is_site_local)
    )


def _get_pinned(url: httpx2.URL, addresses: list[str], deadline: float) -> dict:
    """One GET to the first validated address that accepts a connection. A redirect comes back
    as {"location": absolute URL}, anything else as fetch()'s result."""
    problem = None
    for address in addresses:
        try:
            return _get_from(url, address, deadline)
        except httpx2.ConnectError as exc:  # refused, unreachable, or a bad certificate: try the next
            problem = exc
        except httpx2.TimeoutException:
            raise ToolInputError(f"{url} did not answer in time; try again later or another source.") from None
        except httpx2.HTTPError as exc:
            raise ToolInputError(f"Fetching {url} failed: {type(exc).__name__}: {exc}") from None
    raise ToolInputError(f"Could not connect to {url.host}: {problem}")


def _get_from(url: httpx2.URL, address: str, deadline: float) -> dict:
    headers = {"Host": url.netloc.decode("ascii"), "User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    # sni_hostname: TLS sends, and checks the certificate against, the name rather than the IP.
    extensions = {"sni_hostname": url.raw_host.decode("ascii")} if url.scheme == "https" else {}
    # A fresh client per hop: no cookie set by one hop is sent on the next; trust_env=False keeps
    # proxies (which would resolve the name themselves) and .netrc credentials out.
    with httpx2.Client(trust_env=False, verify=TLS_VERIFY, follow_redirects=False, timeout=_timeouts(deadline)) as client:
        with client.stream("GET", url.copy_with(host=address), headers=headers, extensions=extensions) as response:
            if response.status_code in _REDIRECT_STATUSES and "location" in response.headers:
                return {"location": str(url.join(response.headers["location"]))}
            mime = _text_mime(url, response)
            body, truncated = _read_capped(response, deadline)
    text = _decode(body, response.charset_encoding, html=mime in ("text/html", "application/xhtml+xml"))
    return {"url": str(url), "status": response.status_code, "content_type": mime, "text": text, "truncated": truncated}


def _page(answer: dict, offset: int) -> dict:
    """One MAX_TEXT_CHARS page of the text from `offset`, saying where the next one starts."""
    text, body_cut = answer["text"], answer["truncated"]
    if offset and offset >= len(text):
        raise ToolInputError(f"offset {offset} is past the end of the page's text ({len(text):,} characters).")
    piece = text[offset : offset + MAX_TEXT_CHARS]
    next_offset = offset + MAX_TEXT_CHARS if offset + MAX_TEXT_CHARS < len(text) else None
    if next_offset is not None:
        piece += f"\n[more: call fetch_url again with offset {next_offset} for the next part]"
    elif body_cut:
        piece += f"\n[truncated: only the first {MAX_BODY_BYTES:,} bytes of the page were read]"
    return {**answer, "text": piece, "truncated": body_cut or next_offset is not None,
            "total_chars": len(text), "next_offset": next_offset}


def _timeouts(deadline: float) -> httpx2.Timeout:
    left = _time_left(deadline)
    return httpx2.Timeout(connect=min(CONNECT_TIMEOUT_SECONDS, left), read=min(READ_TIMEOUT_SECONDS, left),
                          write=min(READ_TIMEOUT_SECONDS, left), pool=min(CONNECT_TIMEOUT_SECONDS, left))


def _time_left(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise ToolInputError(f"Stopped after {DEADLINE_SECONDS:g} seconds: the server was too slow.")
    return left


def _text_mime(url: httpx2.URL, response: httpx2.Response) -> str:
    mime = response.headers.get("content-type", "").split(";")[0].strip().lower()
    if mime.startswith("text/") or any(marker in mime for marker in _TEXT_MARKERS):
        return mime
    raise ToolInputError(f"{url} is {mime or 'of no stated type'}, not text; fetch_url only reads text, HTML, JSON and XML.")


def _read_capped(response: httpx2.Response, deadline: float) -> tuple[bytes, bool]:
    """The body up to MAX_BODY_BYTES, and whether more was left unread."""
    chunks, size = [], 0
    for chunk in response.iter_bytes():
        _time_left(deadline)
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_BODY_BYTES or response.num_bytes_downloaded > MAX_BODY_BYTES:
            return b"".join(chunks)[:MAX_BODY_BYTES], True
    return b"".join(chunks), False


def _decode(body: bytes, charset: str | None, *, html: bool) -> str:
    try:
        codec = codecs.lookup(charset or "utf-8").name
    except LookupError:
        codec = "utf-8"
    text = body.decode(codec, errors="replace")
    return html_to_text(text) if html else text


class _HTMLText(HTMLParser):
    _SKIP = {"script", "style", "noscript", "template", "svg", "iframe", "object"}
    _BLOCK = set("address article aside blockquote br dd div dl dt figcaption footer form h1 h2 h3 h4 h5 h6 header "
                 "hr li main nav ol p pre section table td th title tr ul".split())

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skipping = 0

    def handle_starttag(self, tag, attrs):
        if tag in self._SKIP:
            self._skipping += 1
        elif tag in self._BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag):
        if tag in self._SKIP:
            self._skipping = max(0, self._skipping - 1)
        elif tag in self._BLOCK:
            self.parts.append("\n")

    def handle_data(self, data):
        if not self._skipping:
            self.parts.append(data)


def html_to_text(html: str) -> str:
    """The readable text of an HTML document: no scripts or styles, one block per line."""
    parser = _HTMLText()
    parser.feed(html)
    parser.close()
    lines = (" ".join(line.split()) for line in "".join(parser.parts).split("\n"))
    return "\n".join(line for line in lines if line)


def _build(scope):
    def fetch_url(url: str, offset: int = 0):
        return fetch(url, offset)

    return fetch_url


TOOL = Tool(
    name="fetch_url",
    description=(
        "Fetch a public web page or text document (http or https) and return its text: HTML is turned into "
        f"readable text, JSON and other text as is, {MAX_TEXT_CHARS:,} characters per call (page on with offset). Addresses inside "
        "private networks are refused."
    ),
    parameters={
        "type": "object",
        "properties": {
            "url": {"type": "string", "maxLength": MAX_URL_CHARS, "description": "Full URL, e.g. https://example.com/page"},
            "offset": {"type": "integer", "minimum": 0, "default": 0, "description": "Where to start in the page's text (from next_offset)."},
        },
        "required": ["url"],
        "additionalProperties": False,
    },
    read_only=True,
    build=_build,
    timeout_seconds=30.0,
)
