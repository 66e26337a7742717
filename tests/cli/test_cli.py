"""The `zeroembed` command: one entry point, a subcommand per package, help texts from the settings."""

from __future__ import annotations

import pytest

from zeroembed.cli import build_parser, main

from ..dependencies import require


def test_every_subcommand_is_registered(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for command in ("export", "serve", "bench", "keys", "status"):
        assert command in out


def test_serve_flags_and_their_shown_defaults_come_from_the_settings():
    require("pydantic_settings", "server")
    from zeroembed.server.config import Settings

    serve = build_parser()._subparsers._group_actions[0].choices["serve"]
    flags = {action.dest: action for action in serve._actions if action.dest != "help"}
    assert set(flags) - {"handler"} == set(Settings.model_fields)
    for name, field in Settings.model_fields.items():
        assert flags[name].default is None  # unset flags fall through to ZEROEMBED_* variables
        default = field.get_default(call_default_factory=True)
        if default not in (None, False, "", []):  # an empty list (no --model) shows no default
            assert f"(default: {default})" in flags[name].help, name
    assert flags["model"].nargs is None and type(flags["model"]).__name__ == "_AppendAction"  # repeatable
    assert flags["device"].choices == ["auto", "cpu", "cuda"]


def test_an_unknown_subcommand_exits_2(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["frobnicate"])
    assert exit_.value.code == 2
    assert "invalid choice" in capsys.readouterr().err
