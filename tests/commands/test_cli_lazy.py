"""The CLI imports a command only when it runs: every table entry resolves, and ``put``
starts without the daemon's heavy imports."""

from __future__ import annotations

import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from meshsyncd.commands.cli import _COMMANDS, main


def test_every_lazy_command_resolves_to_a_click_command_of_that_name() -> None:
    ctx = click.Context(main)
    assert main.list_commands(ctx) == sorted(_COMMANDS)
    for name in _COMMANDS:
        command = main.get_command(ctx, name)
        assert isinstance(command, click.Command)
        assert command.name == name


def test_put_starts_without_trio_cryptography_or_the_engine() -> None:
    probe = (
        "import sys\n"
        "from meshsyncd.commands.cli import main\n"
        "try:\n"
        "    main(['put', '--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = {'trio', 'cryptography', 'structlog', 'meshsyncd.engine', 'sqlite3',\n"
        "         'anyio', 'mcp', 'langgraph', 'pydantic'}\n"
        "print(sorted(heavy & set(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip().splitlines()[-1] == "[]"


def test_help_lists_mcp_without_importing_the_sdk() -> None:
    """``meshsyncd --help`` loads every command module; the MCP SDK stays out until
    ``meshsyncd mcp`` runs (it is an optional extra)."""
    probe = (
        "import sys\n"
        "from meshsyncd.commands.cli import main\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(sorted({'mcp', 'anyio', 'langgraph'} & set(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    assert "mcp" in out and out.strip().splitlines()[-1] == "[]"


def test_mcp_without_the_sdk_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ["mcp", *(m for m in sys.modules if m.startswith("mcp."))]:
        monkeypatch.setitem(sys.modules, name, None)  # as if the extra were not installed
    monkeypatch.delitem(sys.modules, "meshsyncd.mcpserver", raising=False)
    result = CliRunner().invoke(main, ["mcp", "--socket", "/nonexistent.sock"])
    assert result.exit_code == 2
    assert "pip install 'meshsyncd[mcp]'" in result.stderr
