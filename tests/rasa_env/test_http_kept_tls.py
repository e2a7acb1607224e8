"""connectors/http_kept.py over https: certificates checked, connections kept (a CA made for the test)."""

from __future__ import annotations

import datetime
import ssl
from pathlib import Path
from typing import Any

import pytest

from connectors.http_kept import HttpError

from .scripted_http import OK, client


def certificates(tmp: Path) -> tuple[ssl.SSLContext, ssl.SSLContext, ssl.SSLContext]:
    """A CA and two server certificates it signed, for 127.0.0.1 and for another name: (server context,
    server context with the other name, client context trusting the CA)."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).sign(ca_key, hashes.SHA256()))

    def server(name: str, san: x509.GeneralName, serial: int) -> ssl.SSLContext:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
                .issuer_name(ca_name).public_key(key.public_key()).serial_number(serial).not_valid_before(now)
                .not_valid_after(now + datetime.timedelta(days=1))
                .add_extension(x509.SubjectAlternativeName([san]), critical=False).sign(ca_key, hashes.SHA256()))
        (tmp / f"{serial}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (tmp / f"{serial}.key").write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(tmp / f"{serial}.pem", tmp / f"{serial}.key")
        return context

    trusting = ssl.create_default_context(cadata=ca.public_bytes(serialization.Encoding.PEM).decode())
    return (server("127.0.0.1", x509.IPAddress(ipaddress.ip_address("127.0.0.1")), 2),
            server("graph.example", x509.DNSName("graph.example"), 3), trusting)


async def test_https_checks_the_certificate_and_keeps_its_connection(serve: Any, tmp_path: Path) -> None:
    server_context, other_name, trusting = certificates(tmp_path)
    server = await serve(lambda seen: OK, server_context)
    http = client(server, "https", ssl_context=trusting)
    for _ in range(5):
        assert (await http.request("POST", "/m", b"{}")).body == b'{"ok":true}'
    assert server.connections == 1
    with pytest.raises(HttpError, match="CERTIFICATE_VERIFY_FAILED"):  # the system's CAs do not know this one
        await client(server, "https").request("POST", "/m", b"{}")
    elsewhere = await serve(lambda seen: OK, other_name)  # signed by the trusted CA, for another host
    with pytest.raises(HttpError, match="IP address mismatch"):
        await client(elsewhere, "https", ssl_context=trusting).request("POST", "/m", b"{}")
    await http.close()
    assert http._open == 0
