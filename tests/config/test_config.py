"""meshsyncd.toml: defaults, every error naming its key, env var precedence, peer edits."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest

from meshsyncd.config import (
    ALL_TIERS,
    Config,
    ConfigError,
    HandshakeLimits,
    PeerConfig,
    add_peer,
    load_config,
    parse_address,
    parse_duration,
    parse_tiers,
    remove_peer,
    write_new_config,
)
from meshsyncd.identity import node_id_text
from protocol import Tier

ENV = ("MESHSYNCD_CONFIG", "CONFIGURATION_DIRECTORY", "STATE_DIRECTORY", "RUNTIME_DIRECTORY")
ID_A = bytes(range(32))
ID_B = bytes(range(1, 33))


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV:
        monkeypatch.delenv(name, raising=False)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def error_for(tmp_path: Path, text: str) -> ConfigError:
    path = write(tmp_path / "meshsyncd.toml", text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.path == path
    assert str(info.value).startswith(f"{path}: ")
    return info.value


def test_empty_file_gives_documented_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path / "meshsyncd.toml", ""))
    assert config == Config(
        path=tmp_path / "meshsyncd.toml",
        node_dir=tmp_path,
        listen_host="127.0.0.1",
        listen_port=7700,
        store_path=tmp_path / "store.db",
        control_socket=tmp_path / "control.sock",
        sync_interval=30.0,
        verify_interval=3600.0,
        max_clock_skew_ns=500_000_000,
        durability="full",
        log_format="auto",
        log_level="info",
        retention_ns={Tier.WORKING: 24 * 3600 * 10**9, Tier.EPISODIC: None, Tier.SEMANTIC: None},
        tombstone_grace_ns=7 * 86400 * 10**9,
        metrics_listen="",
        peers=(),
    )
    assert config.pid_file == tmp_path / "meshsyncd.pid"


def test_new_config_template_is_valid_and_all_keys_are_set(tmp_path: Path) -> None:
    path = tmp_path / "meshsyncd.toml"
    write_new_config(path, listen="[::1]:7701")
    config = load_config(path)
    defaults = load_config(write(tmp_path / "empty" / "meshsyncd.toml", ""))
    assert (config.listen_host, config.listen_port) == ("::1", 7701)
    assert config.retention_ns == defaults.retention_ns
    assert config.sync_interval == defaults.sync_interval
    assert config.handshakes == defaults.handshakes == HandshakeLimits()
    assert "docs/config.md" in path.read_text()


def test_every_key_is_read(tmp_path: Path) -> None:
    path = write(
        tmp_path / "etc" / "meshsyncd.toml",
        f"""
node_dir = "../node"
listen = "0.0.0.0:7710"
store = "/var/tmp/x.db"
control_socket = "sock/ctl.sock"
sync_interval = "1m30s"
max_clock_skew = "250ms"
durability = "NORMAL"
log_format = "json"
log_level = "debug"
[retention]
working = "1h"
episodic = "30d"
semantic = "unlimited"
[tombstones]
grace = "0s"
[metrics]
listen = "127.0.0.1:9770"
[handshakes]
max = 100
max_per_source = 4
reserved = 10
timeout = "20s"
first_contact_timeout = "1500ms"
[[peers]]
id = "{node_id_text(ID_A)}"
address = "peer.example:7700"
tiers = ["semantic", "Episodic"]
write_tiers = []
""",
    )
    config = load_config(path)
    assert config.node_dir == tmp_path / "etc" / ".." / "node"
    assert config.store_path == Path("/var/tmp/x.db")
    assert config.control_socket == config.node_dir / "sock" / "ctl.sock"
    assert config.sync_interval == 90.0
    assert config.max_clock_skew_ns == 250_000_000
    assert (config.durability, config.log_format, config.log_level) == ("normal", "json", "debug")
    assert config.retention_ns[Tier.EPISODIC] == 30 * 86400 * 10**9
    assert config.tombstone_grace_ns == 0
    assert config.metrics_listen == "127.0.0.1:9770"
    assert config.handshakes == HandshakeLimits(100, 4, 10, 20.0, 1.5)
    peer = config.peer(ID_A)
    assert peer == PeerConfig(
        ID_A, "peer.example", 7700, frozenset({Tier.SEMANTIC, Tier.EPISODIC}), frozenset()
    )
    assert peer.address == "peer.example:7700"
    assert config.peer(ID_B) is None


@pytest.mark.parametrize(
    ("text", "key", "message"),
    [
        ('lisen = "1.2.3.4:1"', "lisen", 'unknown key (did you mean "listen"?)'),
        ("[retention]\nworkin = '1h'", "retention.workin", "unknown key"),
        ("[bogus]\nx = 1", "bogus", "unknown key"),
        ('listen = "nohost"', "listen", '"nohost" is not host:port'),
        ('listen = "host:99999"', "listen", "port 99999 is out of range"),
        ('listen = "[nothex]:1"', "listen", "not an IPv6 address"),
        ("listen = 7700", "listen", 'expected a "host:port" string, got int 7700'),
        ('sync_interval = "30x"', "sync_interval", '"30x" is not a duration'),
        ('sync_interval = "0s"', "sync_interval", "must be above zero"),
        ("sync_interval = 30", "sync_interval", "expected a duration string"),
        ('max_clock_skew = "unlimited"', "max_clock_skew", "only allowed for [retention]"),
        ('durability = "sometimes"', "durability", "is not one of full, normal"),
        ('log_format = "xml"', "log_format", "is not one of auto, json, console"),
        ('log_level = "loud"', "log_level", "is not one of debug"),
        ('store = ""', "store", "expected a non-empty path"),
        ("[retention]\nsemantic = '0h'", "retention.semantic", 'above zero or "unlimited"'),
        ("[retention]\nworking = 'forever'", "retention.working", "is not a duration"),
        ("[tombstones]\ngrace = '7 days'", "tombstones.grace", "is not a duration"),
        ("[metrics]\nlisten = '0.0.0.0:9770'", "metrics.listen", "loopback only"),
        ("[conflicts]\nmax_bytes = 10", "conflicts.max_bytes", "at least 4096, got int 10"),
        ("[history]\nsemantic = -1", "history.semantic", "from 0 to 1000"),
        ("[history]\nmax_bytes = 1", "history.max_bytes", "from 4096"),
        ("[conflicts]\nmax_bytes = '1MiB'", "conflicts.max_bytes", "at least 4096"),
        ("retention = 3", "retention", "expected a table"),
        ("[handshakes]\nmax = 0", "handshakes.max", "must be between 1 and 100000, got 0"),
        ("[handshakes]\nmax = '64'", "handshakes.max", 'expected a whole number, got "64"'),
        ("[handshakes]\nmax = 6.5", "handshakes.max", "expected a whole number"),
        ("[handshakes]\nmax_per_source = true", "handshakes.max_per_source", "whole number"),
        ("[handshakes]\nreserved = -1", "handshakes.reserved", "between 0 and 100000"),
        ("[handshakes]\nmax = 8\nreserved = 8", "handshakes.reserved", "must be below"),
        ("[handshakes]\ntimeout = '0s'", "handshakes.timeout", "must be above zero"),
        (
            "[handshakes]\nfirst_contact_timeout = 3",
            "handshakes.first_contact_timeout",
            "expected a duration string",
        ),
        ("[handshakes]\nmaxi = 3", "handshakes.maxi", 'did you mean "max"?'),
        ("peers = 3", "peers", "expected [[peers]] tables"),
        ('control_socket = "' + "x" * 120 + '"', "control_socket", "too long for a Unix socket"),
        ("max_peers = 0", "max_peers", "expected a whole number in 1..4096"),
        ("max_peers = '8'", "max_peers", "expected a whole number"),
    ],
)
def test_bad_values_name_their_key(tmp_path: Path, text: str, key: str, message: str) -> None:
    error = error_for(tmp_path, text)
    assert error.key == key
    assert f": {key}: " in str(error)
    assert message in str(error)


def peer_toml(node_id: bytes, address: str = "h:1", extra: str = "") -> str:
    return f'[[peers]]\nid = "{node_id_text(node_id)}"\naddress = "{address}"\n{extra}\n'


@pytest.mark.parametrize(
    ("text", "key", "message"),
    [
        (peer_toml(ID_A, "nohost"), "peers[1].address", '"nohost" is not host:port'),
        (peer_toml(ID_A, "h:0"), "peers[1].address", "port 0 is out of range"),
        (peer_toml(ID_A, extra='tiers = ["working", "L9"]'), "peers[1].tiers", 'unknown tier "L9"'),
        (peer_toml(ID_A, extra="write_tiers = 'working'"), "peers[1].write_tiers", "expected"),
        (peer_toml(ID_A, extra="adress = 'x:1'"), "peers[1].adress", 'did you mean "address"'),
        (peer_toml(ID_B), "peers[1].id", "duplicate peer"),
        ('[[peers]]\nid = "abc"\naddress = "h:1"', "peers[1].id", "52 base32 characters, got 3"),
        ('[[peers]]\naddress = "h:1"', "peers[1].id", "missing"),
        (peer_toml(ID_A, extra='share = ["prefs/"]'), "peers[1].share[0]", "tier:namespace"),
        (peer_toml(ID_A, extra='share = ["L9:prefs/"]'), "peers[1].share[0]", "unknown tier"),
        (
            peer_toml(ID_A, extra='write_share = ["semantic:a/", "semantic:a//b/"]'),
            "peers[1].write_share[1]",
            "empty label",
        ),
        (peer_toml(ID_A, extra="share = 'semantic:a/'"), "peers[1].share", "expected a list"),
        (peer_toml(ID_A, extra="introducer = 'yes'"), "peers[1].introducer", "true or false"),
    ],
)
def test_bad_peers_name_their_index_and_key(
    tmp_path: Path, text: str, key: str, message: str
) -> None:
    error = error_for(tmp_path, peer_toml(ID_B) + text)
    assert error.key == key
    assert message in str(error)


def test_share_rules_narrow_tiers_to_namespaces(tmp_path: Path) -> None:
    from meshsyncd.mesh.share import parse_share
    from protocol import NAMED, name_block

    rule = 'share = ["semantic:prefs/", "episodic:agents/alden"]'
    config = load_config(write(tmp_path / "meshsyncd.toml", peer_toml(ID_A, extra=rule)))
    share = parse_share(config.peers[0].share, "share")
    assert share is not None and share.describe() == ["episodic:agents/alden/", "semantic:prefs/"]
    assert share.allows(Tier.WORKING, 0, b"x")  # a tier no entry names is not narrowed
    assert not share.allows(Tier.SEMANTIC, 0, b"nameless")
    assert share.allows(Tier.SEMANTIC, NAMED, name_block(("prefs", "ui"), "k"))
    assert share.allows(Tier.EPISODIC, NAMED, name_block(("agents", "alden"), "k"))
    assert not share.allows(Tier.EPISODIC, NAMED, name_block(("agents", "aldenX"), "k"))
    assert parse_share([], "share") is None


def test_example_message_shape(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "meshsyncd.toml", peer_toml(ID_A) + peer_toml(ID_B, "nohost"))
    with pytest.raises(ConfigError) as info:
        load_config()
    assert str(info.value) == 'meshsyncd.toml: peers[1].address: "nohost" is not host:port'


def test_not_toml_and_missing_file(tmp_path: Path) -> None:
    error = error_for(tmp_path, "listen = ")
    assert error.key is None
    assert "not valid TOML" in str(error)
    with pytest.raises(ConfigError, match=r"nope\.toml: no such file"):
        load_config(tmp_path / "nope.toml")


def test_config_location_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cwd = write(tmp_path / "cwd" / "meshsyncd.toml", 'listen = "127.0.0.1:1"')
    conf_dir = write(tmp_path / "etc" / "meshsyncd.toml", 'listen = "127.0.0.1:2"')
    env = write(tmp_path / "env.toml", 'listen = "127.0.0.1:3"')
    arg = write(tmp_path / "arg.toml", 'listen = "127.0.0.1:4"')
    monkeypatch.chdir(cwd.parent)
    assert load_config().listen_port == 1
    monkeypatch.setenv("CONFIGURATION_DIRECTORY", f"{conf_dir.parent}:/elsewhere")
    assert load_config().listen_port == 2
    monkeypatch.setenv("MESHSYNCD_CONFIG", str(env))
    assert load_config().listen_port == 3
    assert load_config(arg).listen_port == 4


def test_systemd_directories_relocate_relative_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path / "meshsyncd.toml", "")
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "state"))
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(tmp_path / "run"))
    config = load_config(path)
    assert config.store_path == tmp_path / "state" / "store.db"
    assert config.control_socket == tmp_path / "run" / "control.sock"
    assert config.node_dir == tmp_path
    write(path, 'store = "/abs/store.db"\ncontrol_socket = "/abs/c.sock"')
    config = load_config(path)
    assert (config.store_path, config.control_socket) == (
        Path("/abs/store.db"),
        Path("/abs/c.sock"),
    )


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("500ms", 0.5), ("30s", 30.0), ("5m", 300.0), ("24h", 86400.0), ("7d", 604800.0),
     ("1h30m", 5400.0), ("1.5s", 1.5), (" 2S ", 2.0)],
)  # fmt: skip
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text, "k") == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "30", "s", "-1s", "1 s", "1y", "1h 30m", "unlimited"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_duration(text, "sync_interval")
    assert info.value.key == "sync_interval"
    assert str(info.value).startswith("sync_interval: ")


def test_parse_address_and_tiers() -> None:
    assert parse_address("[::1]:7700", "k") == ("::1", 7700)
    assert parse_address("node-a.lan:1", "k") == ("node-a.lan", 1)
    assert parse_address("0.0.0.0:0", "k", allow_port_zero=True) == ("0.0.0.0", 0)
    for bad in ("h:", ":1", "h:1:2", "::1:7700", "h h:1", "h:0"):
        with pytest.raises(ConfigError, match=re.escape(f'"{bad}"')):
            parse_address(bad, "k")
    assert parse_tiers("working, SEMANTIC", "k") == {Tier.WORKING, Tier.SEMANTIC}
    assert parse_tiers("", "k") == frozenset()
    with pytest.raises(ConfigError, match='k: unknown tier "bogus"'):
        parse_tiers("working,bogus", "k")


def test_add_and_remove_peers_round_trip_keeping_comments(tmp_path: Path) -> None:
    path = tmp_path / "meshsyncd.toml"
    write_new_config(path, listen="127.0.0.1:7700")
    path.chmod(0o640)
    original = path.read_text().replace('log_level = "info"', 'log_level = "info"  # mine')
    path.write_text(original)
    a = PeerConfig(ID_A, "::1", 7701, frozenset({Tier.SEMANTIC}), frozenset())
    b = PeerConfig(ID_B, "b.lan", 7702)
    add_peer(path, a)
    add_peer(path, b)
    config = load_config(path)
    assert config.peers == (a, b)
    assert config.peer(ID_B) is not None and config.peer(ID_B).write_tiers == ALL_TIERS
    assert '"[::1]:7701"' in path.read_text()
    remove_peer(path, ID_A)
    assert load_config(path).peers == (b,)
    remove_peer(path, ID_B)
    assert load_config(path).peers == ()
    assert path.read_text() == original
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["meshsyncd.toml"]


def test_introducer_and_max_peers_round_trip(tmp_path: Path) -> None:
    path = write(tmp_path / "meshsyncd.toml", "max_peers = 3\n")
    add_peer(path, PeerConfig(ID_A, "hub.lan", 7700, introducer=True))
    add_peer(path, PeerConfig(ID_B, "b.lan", 7700))
    config = load_config(path)
    assert config.max_peers == 3
    assert [p.introducer for p in config.peers] == [True, False]
    assert "introducer = true" in path.read_text()
    assert load_config(write(tmp_path / "e" / "meshsyncd.toml", "")).max_peers == 8


def test_add_refuses_a_duplicate_and_remove_an_absent_peer(tmp_path: Path) -> None:
    path = write(tmp_path / "meshsyncd.toml", peer_toml(ID_A))
    before = path.read_text()
    with pytest.raises(ConfigError, match="already listed") as info:
        add_peer(path, PeerConfig(ID_A, "other", 9))
    assert info.value.key == "peers[0].id"
    with pytest.raises(ConfigError, match=f"no peer {node_id_text(ID_B)} is listed"):
        remove_peer(path, ID_B)
    assert path.read_text() == before


def test_remove_keeps_comments_that_introduce_the_next_table(tmp_path: Path) -> None:
    path = write(
        tmp_path / "meshsyncd.toml",
        peer_toml(ID_A) + "# the laptop\n" + peer_toml(ID_B) + "\n# metrics on\n[metrics]\n",
    )
    remove_peer(path, ID_B)
    text = path.read_text()
    assert "# the laptop" in text and "# metrics on\n[metrics]" in text
    assert load_config(path).peers[0].node_id == ID_A


def test_edits_of_a_file_they_cannot_handle_are_refused(tmp_path: Path) -> None:
    inline = f'peers = [{{id = "{node_id_text(ID_A)}", address = "h:1"}}]\n'
    path = write(tmp_path / "meshsyncd.toml", inline)
    with pytest.raises(ConfigError, match="cannot find a \\[\\[peers\\]\\] table"):
        remove_peer(path, ID_A)
    with pytest.raises(ConfigError, match="would make the file invalid"):
        add_peer(path, PeerConfig(ID_B, "h", 2))
    assert path.read_text() == inline
    bad = write(tmp_path / "bad.toml", "lisen = 1")
    with pytest.raises(ConfigError, match="lisen: unknown key"):
        add_peer(bad, PeerConfig(ID_B, "h", 2))


def test_write_new_config_refuses_to_overwrite(tmp_path: Path) -> None:
    path = write(tmp_path / "meshsyncd.toml", "# mine\n")
    with pytest.raises(ConfigError, match="already exists; refusing to overwrite"):
        write_new_config(path, listen="127.0.0.1:1")
    assert path.read_text() == "# mine\n"
    with pytest.raises(ConfigError, match="listen: "):
        write_new_config(tmp_path / "new.toml", listen="nope")
    assert not (tmp_path / "new.toml").exists()


def test_every_key_is_documented_and_the_docs_example_loads(tmp_path: Path) -> None:
    import meshsyncd.config.loader as module

    docs = (Path(__file__).parents[2] / "docs" / "config.md").read_text()
    keys = [*module._TOP_KEYS, *module._PEER_KEYS]
    keys += [f"{table}] {key}" for table, values in module._TABLES.items() for key in values]
    for key in keys:
        name = key.split("] ")[-1]
        assert f"`{name}`" in docs, key
        assert f"``{name}" in (module.__doc__ or ""), key
    for table in module._TABLES:
        assert f"## `[{table}]`" in docs
        assert f"``[{table}]``" in (module.__doc__ or "")
    example = re.search(r"```toml\n(.*?)```", docs, re.S)
    assert example is not None
    config = load_config(write(tmp_path / "meshsyncd.toml", example.group(1)))
    assert len(config.peers) == 2


def test_conflict_log_bound_is_read(tmp_path: Path) -> None:
    """``[conflicts] max_bytes`` bounds the conflict log (docs/config.md); 16 MiB default."""
    assert load_config(write(tmp_path / "d" / "meshsyncd.toml", "")).conflict_bytes == 16 << 20
    cfg = load_config(write(tmp_path / "s" / "meshsyncd.toml", "[conflicts]\nmax_bytes = 65536"))
    assert cfg.conflict_bytes == 65536
    cfg = load_config(write(tmp_path / "h" / "meshsyncd.toml", "[history]\nworking = 0"))
    assert cfg.history_versions[Tier.WORKING] == 0 and cfg.history_versions[Tier.SEMANTIC] == 8
