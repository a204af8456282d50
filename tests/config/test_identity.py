"""Node identity: key files on disk, node id text form, certificates, peer certificate store."""

from __future__ import annotations

import datetime
import hashlib
import re
import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import ExtensionOID, NameOID

from meshsyncd.identity import (
    NODE_ID_LEN,
    Identity,
    IdentityError,
    create_identity,
    load_identity,
    load_peer_certs,
    node_id_from_cert_der,
    node_id_from_public_key,
    node_id_text,
    parse_node_id,
    save_peer_cert,
)


@pytest.fixture
def node(tmp_path: Path) -> Identity:
    return create_identity(tmp_path / "node")


def test_create_writes_private_key_0600_and_loads_back(node: Identity, tmp_path: Path) -> None:
    assert stat.S_IMODE(node.key_path.stat().st_mode) == 0o600
    assert node.key_path == tmp_path / "node" / "node.key"
    assert node.cert_path.read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")
    assert stat.S_IMODE((tmp_path / "node").stat().st_mode) == 0o700
    assert load_identity(tmp_path / "node") == node
    assert len(node.node_id) == NODE_ID_LEN


def test_node_id_is_sha256_of_raw_public_key(node: Identity) -> None:
    key = serialization.load_pem_private_key(node.key_path.read_bytes(), password=None)
    assert isinstance(key, Ed25519PrivateKey)
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert node.node_id == hashlib.sha256(raw).digest()
    assert node_id_from_public_key(key.public_key()) == node.node_id
    assert node.short == int.from_bytes(node.node_id[:8], "big")


def test_certificate_is_a_self_signed_anchor_named_by_the_node_id(node: Identity) -> None:
    cert = x509.load_der_x509_certificate(node.cert_der())
    assert node_id_from_cert_der(node.cert_der()) == node.node_id
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert cn == node.text
    assert cert.issuer == cert.subject
    assert cert.extensions.get_extension_for_oid(ExtensionOID.BASIC_CONSTRAINTS).value.ca
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [node.text]
    assert cert.not_valid_after_utc.year == 9999
    cert.verify_directly_issued_by(cert)


def test_create_refuses_to_overwrite(node: Identity, tmp_path: Path) -> None:
    before = node.key_path.read_bytes()
    with pytest.raises(IdentityError, match=r"node\.key: already exists"):
        create_identity(tmp_path / "node")
    assert node.key_path.read_bytes() == before


def test_create_refuses_when_only_the_certificate_exists(tmp_path: Path) -> None:
    (tmp_path / "node.crt").write_text("x")
    with pytest.raises(IdentityError, match=r"node\.crt: already exists"):
        create_identity(tmp_path)
    assert not (tmp_path / "node.key").exists()


def test_load_refuses_a_group_or_world_readable_key(node: Identity, tmp_path: Path) -> None:
    node.key_path.chmod(0o640)
    with pytest.raises(IdentityError) as info:
        load_identity(tmp_path / "node")
    assert str(node.key_path) in str(info.value)
    assert "0640" in str(info.value)


def test_load_refuses_a_certificate_for_another_key(tmp_path: Path) -> None:
    a = create_identity(tmp_path / "a")
    b = create_identity(tmp_path / "b")
    a.cert_path.write_bytes(b.cert_path.read_bytes())
    with pytest.raises(IdentityError, match=r"node\.crt: certificate is not for the key"):
        load_identity(tmp_path / "a")


def test_load_names_missing_and_garbled_files(node: Identity, tmp_path: Path) -> None:
    with pytest.raises(IdentityError, match=r"empty/node\.key: no such file"):
        load_identity(tmp_path / "empty")
    node.cert_path.write_text("not a cert")
    with pytest.raises(IdentityError, match=r"node\.crt: not a PEM certificate"):
        load_identity(tmp_path / "node")
    node.key_path.write_text("not a key")
    with pytest.raises(IdentityError, match=r"node\.key: not an unencrypted PEM private key"):
        load_identity(tmp_path / "node")


def test_node_id_text_is_a_52_char_lowercase_dns_label(node: Identity) -> None:
    text = node.text
    assert len(text) == 52
    assert text == text.lower()
    assert set(text) <= set("abcdefghijklmnopqrstuvwxyz234567")
    assert node_id_text(bytes(32)) == "a" * 52
    with pytest.raises(ValueError, match="32 bytes, got 3"):
        node_id_text(b"abc")


def test_parse_node_id_accepts_case_whitespace_and_dashes(node: Identity) -> None:
    text = node.text
    grouped = "-".join(text[i : i + 4] for i in range(0, 52, 4)).upper()
    assert parse_node_id(text) == node.node_id
    assert parse_node_id(f"  {grouped}\n") == node.node_id
    assert parse_node_id(text[:26] + " " + text[26:]) == node.node_id


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("abcdefghijkl", "node id must be 52 base32 characters, got 12"),
        ("", "node id must be 52 base32 characters, got 0"),
        ("a" * 53, "got 53"),
        ("a" * 51 + "1", "outside base32 .*'1'"),
        ("a" * 50 + "0!", "outside base32 .*'!', '0'"),
        ("a" * 51 + "b", "not canonical: last character 'b'"),
    ],
)
def test_parse_node_id_errors_are_specific(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_node_id(text)


def test_node_id_from_cert_der_refuses_non_ed25519_and_garbage() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ec")])
    now = datetime.datetime.now(datetime.UTC)
    der = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.DER)
    )
    with pytest.raises(IdentityError, match="not Ed25519"):
        node_id_from_cert_der(der)
    with pytest.raises(IdentityError, match=r"not a DER X\.509 certificate"):
        node_id_from_cert_der(b"\x30\x03junk")


def test_peer_certs_round_trip(node: Identity, tmp_path: Path) -> None:
    a = create_identity(tmp_path / "a")
    b = create_identity(tmp_path / "b")
    assert load_peer_certs(node.key_path.parent) == {}
    path = save_peer_cert(node.key_path.parent, a.cert_der(), a.node_id)
    assert path == node.key_path.parent / "peers" / f"{a.text}.crt"
    save_peer_cert(node.key_path.parent, b.cert_der(), b.node_id)
    save_peer_cert(node.key_path.parent, a.cert_der(), a.node_id)  # again: replaced, not an error
    assert load_peer_certs(node.key_path.parent) == {
        a.node_id: a.cert_der(),
        b.node_id: b.cert_der(),
    }
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]


def test_save_peer_cert_refuses_a_cert_for_another_node(node: Identity, tmp_path: Path) -> None:
    a = create_identity(tmp_path / "a")
    with pytest.raises(IdentityError, match=f"certificate is for node {a.text}, expected"):
        save_peer_cert(node.key_path.parent, a.cert_der(), node.node_id)
    assert load_peer_certs(node.key_path.parent) == {}


def test_load_peer_certs_names_a_misnamed_file(node: Identity, tmp_path: Path) -> None:
    a = create_identity(tmp_path / "a")
    peers = node.key_path.parent / "peers"
    peers.mkdir()
    wrong = peers / f"{node.text}.crt"
    wrong.write_bytes(a.cert_path.read_bytes())
    with pytest.raises(
        IdentityError, match=re.escape(f"{wrong}: certificate is for node {a.text}")
    ):
        load_peer_certs(node.key_path.parent)


def test_two_identities_complete_a_mutual_tls13_handshake(tmp_path: Path) -> None:
    """The transport's contract: each cert is its own trust anchor, SNI is the node id text."""
    server = create_identity(tmp_path / "server")
    client = create_identity(tmp_path / "client")

    def context(side: ssl._SSLMethod, me: Identity, peer: Identity) -> ssl.SSLContext:
        ctx = ssl.SSLContext(side)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.load_cert_chain(me.cert_path, me.key_path)
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.verify_flags |= ssl.VERIFY_X509_STRICT
        ctx.load_verify_locations(cadata=peer.cert_der())
        return ctx

    s_in, s_out, c_in, c_out = (ssl.MemoryBIO() for _ in range(4))
    s = context(ssl.PROTOCOL_TLS_SERVER, server, client).wrap_bio(s_in, s_out, server_side=True)
    c = context(ssl.PROTOCOL_TLS_CLIENT, client, server).wrap_bio(
        c_in, c_out, server_hostname=server.text
    )
    done: set[object] = set()
    for _ in range(10):
        for end in (c, s):
            try:
                end.do_handshake()
                done.add(end)
            except ssl.SSLWantReadError:
                pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
    assert done == {c, s}
    assert c.version() == "TLSv1.3"
    assert node_id_from_cert_der(s.getpeercert(binary_form=True)) == client.node_id
    assert node_id_from_cert_der(c.getpeercert(binary_form=True)) == server.node_id
