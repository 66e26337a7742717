"""CurveZMQ: `zeroembed keys`, a server that admits only known client keys, clients with and without them."""

from __future__ import annotations

import stat

import pytest
import zmq.auth

from zeroembed.cli import main
from zeroembed.client import Client, InvalidRequest, ServerTimeout

from ..servers import start_server, wait_ready


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    directory = tmp_path_factory.mktemp("keys")
    assert main(["keys", str(directory)]) == 0
    admitted = directory / "admitted"
    admitted.mkdir()
    (admitted / "client.key").write_bytes((directory / "client.key").read_bytes())
    return directory


@pytest.fixture(scope="module")
def curve_server(default_artifact, keys, tmp_path_factory):
    server = start_server(default_artifact, tmp_path_factory.mktemp("curve"), "--curve-secret",
                          str(keys / "server.key_secret"), "--curve-clients", str(keys / "admitted"), wait=False)
    server.client_keys = dict(server_key=keys / "server.key", client_key=keys / "client.key_secret")
    wait_ready(server)
    yield server
    assert server.stop() == 0, server.log()


def test_keys_writes_pyzmq_certificates(keys):
    names = sorted(p.name for p in keys.iterdir() if p.is_file())
    assert names == ["client.key", "client.key_secret", "server.key", "server.key_secret"]
    public, secret = zmq.auth.load_certificate(keys / "server.key_secret")
    assert public and secret
    assert stat.S_IMODE((keys / "server.key_secret").stat().st_mode) == 0o600


def test_keys_refuses_to_overwrite(keys, capsys):
    assert main(["keys", str(keys)]) == 2
    assert "already exists" in capsys.readouterr().err


def test_admitted_client_gets_vectors(curve_server, keys):
    with Client(curve_server.endpoint, server_key=keys / "server.key", client_key=keys / "client.key_secret") as c:
        assert c.encode(["secret hello"]).shape == (1, 384)
        assert c.status()["curve"] is True


def test_keyless_client_gets_nothing(curve_server):
    with pytest.raises(ServerTimeout):
        with Client(curve_server.endpoint, timeout=1.5) as client:
            client.encode(["let me in"])


def test_unknown_client_key_gets_nothing(curve_server, keys, tmp_path):
    zmq.auth.create_certificates(tmp_path, "stranger")
    with pytest.raises(ServerTimeout):
        with Client(curve_server.endpoint, timeout=1.5, server_key=keys / "server.key",
                    client_key=tmp_path / "stranger.key_secret") as client:
            client.encode(["let me in"])


def test_client_key_errors_are_clear(keys, tmp_path):
    with pytest.raises(InvalidRequest, match="both server_key"):
        Client(server_key=keys / "server.key")
    with pytest.raises(InvalidRequest, match="no secret key"):
        Client(server_key=keys / "server.key", client_key=keys / "client.key")
    with pytest.raises(InvalidRequest, match="cannot read"):
        Client(server_key=tmp_path / "missing.key", client_key=keys / "client.key_secret")


def test_half_curve_settings_refuse_to_start(default_artifact, keys):
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "zeroembed.cli", "serve", "--model", str(default_artifact),
                             "--curve-secret", str(keys / "server.key_secret"), "--metrics-port", "0"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "both --curve-secret and --curve-clients" in result.stderr
