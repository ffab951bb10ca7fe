"""Where a webhook may point: public addresses only, so a team's URL cannot make a worker post
into the operator's network (Redis on loopback, a cloud metadata service, a private admin page).

Checked twice: when the URL is set (its host as written: `localhost`, `127.0.0.1`, `0x7f000001`,
`[::ffff:127.0.0.1]`, ...), and at delivery on the very addresses the socket connects to, after
DNS resolution, so a name that resolves to a public address when set and a private one later
(DNS rebinding) is refused too. `SPEEDQ_WEBHOOK_ALLOW_PRIVATE=1` lets an operator post to a
receiver on their own network.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence

from speedq import settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

ALLOW_PRIVATE_ENV = settings.env_name("webhook_allow_private")
# Names that always mean this machine or a cloud's metadata service, whatever DNS says.
_LOCAL_NAMES = ("localhost", "metadata.google.internal", "metadata")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class PrivateTarget(ValueError):
    """The webhook's host is or resolves to an address that is not public."""


def allow_private() -> bool:
    return settings.get().webhook_allow_private


def literal_address(host: str) -> IPAddress | None:
    """The address a host written as an IP literal means, in every form a resolver accepts:
    dotted, short (`127.1`), hex (`0x7f000001`), decimal (`2130706433`), octal, IPv6."""
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])  # an IPv6 zone id names no other host
    except ValueError:
        pass
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))  # the BSD forms getaddrinfo takes
    except (OSError, UnicodeError, ValueError):
        return None


def _embedded_v4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries and may be routed to (mapped, 6to4, Teredo, NAT64)."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def is_public(address: IPAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address):
        inner = _embedded_v4(address)
        if inner is not None:
            return is_public(inner)
    return address.is_global and not address.is_multicast


def check_host(host: str) -> None:
    """Refuse a host that, as written, names a non-public address (no DNS lookup)."""
    if allow_private():
        return
    name = host.lower().rstrip(".")
    if name in _LOCAL_NAMES or name.endswith(".localhost"):
        raise PrivateTarget(f"must not point at {host} (a local or metadata host)")
    address = literal_address(name)
    if address is not None and not is_public(address):
        raise PrivateTarget(
            f"must point at a public address, not {address} (set {ALLOW_PRIVATE_ENV}=1 to allow private ones)"
        )


# socket.getaddrinfo's answer: (family, type, proto, canonname, sockaddr)
AddrInfo = tuple[
    socket.AddressFamily, socket.SocketKind, int, str, "tuple[str, int] | tuple[str, int, int, int] | tuple[int, bytes]"
]


def public_addresses(host: str, port: int) -> Sequence[AddrInfo]:
    """getaddrinfo's answers for host:port, refused if any is not public (a name with one
    private answer could be made to use it)."""
    check_host(host)
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    if not allow_private():
        for info in infos:
            ip = info[4][0]
            if not isinstance(ip, str):  # not an IP family at all, so not a public address
                raise PrivateTarget(f"{host} resolves to {ip!r}, which is not an IP address")
            address = ipaddress.ip_address(ip.split("%", 1)[0])
            if not is_public(address):
                raise PrivateTarget(f"{host} resolves to {address}, which is not a public address")
    return infos


def connect_public(
    address: tuple[str, int], timeout: float | None = None, source_address: object = None
) -> socket.socket:
    """`socket.create_connection` that connects only to the checked addresses it resolved itself:
    http.client's hook, so the check and the connect see the same DNS answer."""
    host, port = address
    last: OSError | None = None
    for family, kind, proto, _, sockaddr in public_addresses(host, port):
        sock = socket.socket(family, kind, proto)
        try:
            if timeout is not None:
                sock.settimeout(timeout)
            sock.connect(sockaddr)
            return sock
        except OSError as exc:
            sock.close()
            last = exc
    raise last or OSError(f"no address for {host}")
