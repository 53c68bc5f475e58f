"""Keypair crypto as Nova does it: fingerprints that match Nova's, generated keys in
the formats Nova returns (with the ``cryptography`` package, a dependency already).

ssh: the fingerprint is the MD5 of the key blob in colon hex (``ssh-keygen -E md5``);
a generated key is RSA 2048, its private half a traditional PEM
(``BEGIN RSA PRIVATE KEY``). x509: the fingerprint is the SHA1 of the certificate's
DER; a generated one is a self-signed client certificate for WinRM (CN the user, a
UPN ``user@localhost``) and its private key a base64 PKCS#12 with no password.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from strato.exceptions import BadRequest

SSH, X509 = "ssh", "x509"
_UPN = x509.ObjectIdentifier("1.3.6.1.4.1.311.20.2.3")  # Microsoft's user principal name


def _colons(hexdigest: str) -> str:
    return ":".join(hexdigest[i:i + 2] for i in range(0, len(hexdigest), 2))


def invalid(reason: str) -> BadRequest:
    return BadRequest(f"Keypair data is invalid: {reason}")


def ssh_fingerprint(public_key: str) -> str:
    """MD5 colon hex of the key blob; 400 unless it is an OpenSSH public key."""
    try:
        serialization.load_ssh_public_key(public_key.strip().encode())
        blob = base64.b64decode(public_key.split()[1], validate=True)
    except (ValueError, IndexError, TypeError, UnicodeError):
        raise invalid("failed to generate fingerprint") from None
    return _colons(hashlib.md5(blob, usedforsecurity=False).hexdigest())


def x509_fingerprint(pem: str) -> str:
    """SHA1 colon hex of the certificate's DER; 400 unless it is a PEM certificate."""
    try:
        cert = x509.load_pem_x509_certificate(pem.encode())
    except (ValueError, TypeError, UnicodeError) as exc:
        raise invalid(f"failed to generate X509 fingerprint. Error message: {exc}") \
            from None
    return _colons(cert.fingerprint(hashes.SHA1()).hex())  # noqa: S303 - Nova's format


def fingerprint(public_key: str, key_type: str) -> str:
    if "\x00" in public_key:  # no key has one, and PostgreSQL's text cannot hold it
        raise invalid("the key holds a NUL character")
    return x509_fingerprint(public_key) if key_type == X509 else ssh_fingerprint(public_key)


def generate(key_type: str, user_id: str) -> tuple[str, str, str]:
    """(private key, public key, fingerprint) of a new key of ``key_type``."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if key_type == X509:
        return _x509(key, user_id)
    private = key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH).decode()
    public = f"{public} Generated-by-Nova"
    return private, public, ssh_fingerprint(public)


def _x509(key: rsa.RSAPrivateKey, user_id: str) -> tuple[str, str, str]:
    upn = f"{user_id}@localhost".encode()
    # the otherName value is DER: a UTF8String (tag 12) of the UPN
    der_upn = bytes([12]) + _der_length(len(upn)) + upn
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, user_id)])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + timedelta(days=3650))
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .add_extension(x509.SubjectAlternativeName([x509.OtherName(_UPN, der_upn)]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    bundle = pkcs12.serialize_key_and_certificates(None, key, cert, None,
                                                   serialization.NoEncryption())
    return base64.b64encode(bundle).decode(), pem, x509_fingerprint(pem)


def _der_length(n: int) -> bytes:
    if n < 128:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw
