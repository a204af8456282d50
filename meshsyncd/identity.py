"""A node's identity: an Ed25519 key, a self-signed certificate, and the peers it has met.

Theory of operation (DESIGN.md, "Identity and trust"): a node *is* its Ed25519 key. The full
node id is SHA-256 over the raw 32-byte public key, so it is fixed by the key alone and any
peer can recompute it from the certificate it sees in the TLS handshake. There is no CA: each
node's certificate is self-signed and marked ``CA=True`` so that a peer can load it directly as
a trust anchor. Trust comes from the config, which lists the node ids a node will talk to.

The text form of a node id is RFC 4648 base32, lowercase, without padding: 52 characters from
``a-z2-7``. That is a valid DNS label, so it doubles as the certificate's subject CN, its DNS
subjectAltName and the TLS server name a dialer asks for.

Files in a node directory::

    node.key                  PKCS#8 PEM private key, mode 0600, never overwritten
    node.crt                  PEM self-signed certificate for that key
    peers/<node-id-text>.crt  PEM certificates of peers, learned at first contact

The private key is created with ``O_EXCL`` and mode 0600 from the start, so it is never briefly
readable by others and an existing key is never replaced: losing a key changes the node id and
every peer would have to be told.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.x509.oid import NameOID

from .fsutil import fsync_dir
from .ids import short_text

__all__ = [
    "CERT_FILE",
    "KEY_FILE",
    "NODE_ID_LEN",
    "NODE_ID_TEXT_LEN",
    "PEERS_DIR",
    "Identity",
    "IdentityError",
    "create_identity",
    "load_identity",
    "load_peer_certs",
    "node_id_from_cert_der",
    "node_id_from_public_key",
    "node_id_text",
    "parse_node_id",
    "save_peer_cert",
    "short_text_of",
]

NODE_ID_LEN = 32
NODE_ID_TEXT_LEN = 52  # ceil(256 / 5) base32 characters, padding dropped
KEY_FILE = "node.key"
CERT_FILE = "node.crt"
PEERS_DIR = "peers"

_BASE32_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")
_NOT_BEFORE = datetime.datetime(2000, 1, 1, tzinfo=datetime.UTC)
_NOT_AFTER = datetime.datetime(9999, 12, 31, 23, 59, 59, tzinfo=datetime.UTC)


class IdentityError(Exception):
    """A key or certificate file is missing, unreadable, unsafe or does not match."""


def node_id_text(node_id: bytes) -> str:
    """The 52-character lowercase base32 form of a full node id (a valid DNS label).

    Raises:
        ValueError: ``node_id`` is not 32 bytes.
    """
    if len(node_id) != NODE_ID_LEN:
        raise ValueError(f"node id must be {NODE_ID_LEN} bytes, got {len(node_id)}")
    return base64.b32encode(node_id).decode("ascii").rstrip("=").lower()


def short_text_of(node_id: bytes) -> str:
    """A node id as logs and tables show it: the short form of its text (``meshsyncd.ids``)."""
    return short_text(node_id_text(node_id))


def parse_node_id(text: str) -> bytes:
    """Parse a node id typed by a human: any case, whitespace and ``-`` separators ignored.

    Only the canonical encoding is accepted (the unused low bits of the last character must be
    zero), so every node id has exactly one text form and ids compare equal as text.

    Raises:
        ValueError: wrong length, a character outside base32, or a non-canonical last character.
    """
    compact = "".join(text.split()).replace("-", "").upper()
    if len(compact) != NODE_ID_TEXT_LEN:
        raise ValueError(
            f"node id must be {NODE_ID_TEXT_LEN} base32 characters, got {len(compact)}"
        )
    bad = sorted(set(compact) - _BASE32_ALPHABET)
    if bad:
        shown = ", ".join(repr(ch.lower()) for ch in bad)
        raise ValueError(f"node id has characters outside base32 (a-z, 2-7): {shown}")
    try:
        raw = base64.b32decode(compact + "====")
    except binascii.Error as exc:  # pragma: no cover - alphabet and length checked above
        raise ValueError(f"node id is not base32: {exc}") from None
    if node_id_text(raw) != compact.lower():
        raise ValueError(
            f"node id is not canonical: last character {compact[-1].lower()!r} carries "
            "bits beyond the 256-bit id (a typo?)"
        )
    return raw


def node_id_from_public_key(key: Ed25519PublicKey) -> bytes:
    """The full node id of a public key: SHA-256 of its raw 32 bytes."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).digest()


def node_id_from_cert_der(der: bytes) -> bytes:
    """The node id a DER certificate speaks for (from its key; names in it are not trusted).

    Raises:
        IdentityError: ``der`` is not an X.509 certificate or its key is not Ed25519.
    """
    cert = _cert_from_der(der)
    key = cert.public_key()
    if not isinstance(key, Ed25519PublicKey):
        raise IdentityError(
            f"certificate key is {type(key).__name__.lstrip('_')}, not Ed25519: "
            "not a meshsyncd node certificate"
        )
    return node_id_from_public_key(key)


@dataclass(frozen=True)
class Identity:
    """This node's id and where its key and certificate live (TLS loads them by path)."""

    node_id: bytes
    key_path: Path
    cert_path: Path

    @property
    def text(self) -> str:
        """The node id in its 52-character base32 text form."""
        return node_id_text(self.node_id)

    @property
    def short(self) -> int:
        """The u64 short id written as ``origin`` in item headers (first 8 bytes, big-endian)."""
        return int.from_bytes(self.node_id[:8], "big")

    def cert_der(self) -> bytes:
        """The certificate in DER, as a peer sees it in the handshake.

        Raises:
            IdentityError: the certificate file is gone or unreadable.
        """
        return _read_cert(self.cert_path).public_bytes(serialization.Encoding.DER)


def create_identity(directory: Path) -> Identity:
    """Make a new key and certificate in ``directory`` (created with mode 0700 if missing).

    Raises:
        IdentityError: ``node.key`` or ``node.crt`` already exists (nothing is overwritten), or
            a file cannot be written.
    """
    directory = Path(directory)
    key_path, cert_path = directory / KEY_FILE, directory / CERT_FILE
    for path in (key_path, cert_path):
        if path.exists():
            raise IdentityError(f"{path}: already exists; refusing to overwrite a node identity")
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise IdentityError(f"{directory}: cannot create directory: {exc.strerror}") from None

    key = Ed25519PrivateKey.generate()
    node_id = node_id_from_public_key(key.public_key())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    cert_pem = _self_signed(key, node_id_text(node_id)).public_bytes(serialization.Encoding.PEM)
    _write_exclusive(key_path, key_pem, 0o600)
    try:
        _write_exclusive(cert_path, cert_pem, 0o644)
    except BaseException:
        key_path.unlink(missing_ok=True)
        raise
    fsync_dir(directory)
    return Identity(node_id=node_id, key_path=key_path, cert_path=cert_path)


def load_identity(directory: Path) -> Identity:
    """Load and check the identity in ``directory``.

    Refuses a key file readable by group or others (ssh does the same): a leaked key lets
    anyone impersonate the node to every peer.

    Raises:
        IdentityError: a file is missing or unreadable, the key mode is unsafe, the key is not
            Ed25519, or the certificate is not for this key.
    """
    directory = Path(directory)
    key_path, cert_path = directory / KEY_FILE, directory / CERT_FILE
    try:
        mode = stat.S_IMODE(key_path.stat().st_mode)
    except FileNotFoundError:
        raise IdentityError(
            f"{key_path}: no such file; is {directory} a node directory? (meshsyncd init)"
        ) from None
    except OSError as exc:
        raise IdentityError(f"{key_path}: cannot read: {exc.strerror}") from None
    if mode & 0o077:
        raise IdentityError(
            f"{key_path}: mode {mode:04o} lets group or others read the private key; "
            f"run: chmod 600 {key_path}"
        )
    try:
        key = serialization.load_pem_private_key(_read(key_path), password=None)
    except (ValueError, TypeError) as exc:
        raise IdentityError(f"{key_path}: not an unencrypted PEM private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise IdentityError(f"{key_path}: key is not Ed25519")
    cert = _read_cert(cert_path)
    node_id = node_id_from_public_key(key.public_key())
    cert_key = cert.public_key()
    if not isinstance(cert_key, Ed25519PublicKey) or node_id_from_public_key(cert_key) != node_id:
        raise IdentityError(f"{cert_path}: certificate is not for the key in {key_path}")
    return Identity(node_id=node_id, key_path=key_path, cert_path=cert_path)


def save_peer_cert(directory: Path, der: bytes, expected: bytes) -> Path:
    """Remember a peer's certificate as ``<directory>/peers/<node-id-text>.crt``.

    The certificate must speak for ``expected`` (the id configured for that peer), so a file
    in ``peers/`` is always named after the key inside it. The write is atomic.

    Raises:
        IdentityError: ``der`` is not an Ed25519 certificate, it is for another node, or the
            file cannot be written.
    """
    found = node_id_from_cert_der(der)
    if found != expected:
        raise IdentityError(
            f"certificate is for node {node_id_text(found)}, expected {node_id_text(expected)}"
        )
    peers = Path(directory) / PEERS_DIR
    path = peers / f"{node_id_text(found)}.crt"
    pem = _cert_from_der(der).public_bytes(serialization.Encoding.PEM)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        peers.mkdir(mode=0o700, parents=True, exist_ok=True)
        _write_exclusive(tmp, pem, 0o644)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise IdentityError(f"{path}: cannot write: {exc.strerror}") from None
    fsync_dir(peers)
    return path


def load_peer_certs(directory: Path) -> dict[bytes, bytes]:
    """All remembered peer certificates: node id -> DER (empty if none were saved yet).

    Raises:
        IdentityError: a ``peers/*.crt`` file is unreadable, not an Ed25519 certificate, or is
            named after a different node id than its key gives.
    """
    peers = Path(directory) / PEERS_DIR
    if not peers.is_dir():
        return {}
    found: dict[bytes, bytes] = {}
    for path in sorted(peers.glob("*.crt")):
        der = _read_cert(path).public_bytes(serialization.Encoding.DER)
        try:
            node_id = node_id_from_cert_der(der)
        except IdentityError as exc:
            raise IdentityError(f"{path}: {exc}") from None
        if path.stem != node_id_text(node_id):
            raise IdentityError(
                f"{path}: certificate is for node {node_id_text(node_id)}, not {path.stem}"
            )
        found[node_id] = der
    return found


def _self_signed(key: Ed25519PrivateKey, text: str) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])
    public = key.public_key()
    ski = x509.SubjectKeyIdentifier.from_public_key(public)
    usage = x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(_NOT_BEFORE)
        .not_valid_after(_NOT_AFTER)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(text)]), critical=False)
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
    )
    return builder.sign(key, algorithm=None)


def _cert_from_der(der: bytes) -> x509.Certificate:
    try:
        return x509.load_der_x509_certificate(der)
    except ValueError as exc:
        raise IdentityError(f"not a DER X.509 certificate: {exc}") from None


def _read_cert(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(_read(path))
    except ValueError as exc:
        raise IdentityError(f"{path}: not a PEM certificate: {exc}") from None


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise IdentityError(f"{path}: no such file") from None
    except OSError as exc:
        raise IdentityError(f"{path}: cannot read: {exc.strerror}") from None


def _write_exclusive(path: Path, data: bytes, mode: int) -> None:
    """Create ``path`` (never replacing it) with ``mode`` from the first byte, then fsync."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    except FileExistsError:
        raise IdentityError(f"{path}: already exists; refusing to overwrite") from None
    except OSError as exc:
        raise IdentityError(f"{path}: cannot create: {exc.strerror}") from None
    try:
        os.fchmod(fd, mode)  # the umask may have narrowed it; never widens beyond ``mode``
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except OSError as exc:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise IdentityError(f"{path}: cannot write: {exc.strerror}") from None
    os.close(fd)
