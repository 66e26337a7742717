"""Print the `podman build` arguments that give a build's RUN steps this machine's pip configuration.

pip in the build sees what pip here sees: the effective configuration (files and PIP_* variables, as
``pip config list`` reports it) becomes one pip.conf mounted at /etc/pip.conf, and every local path it
names (find-links folders, file:// indexes, constraint files, the CA bundle) is mounted read-only at
the same path (a file:// index: its parent). Nothing is written into the image: build mounts are not committed to layers.

    python3 deploy/image/pip_mounts.py OUT_DIR    # one argument a line; writes OUT_DIR/pip.conf
"""

from __future__ import annotations

import ast
import subprocess
import sys
from configparser import ConfigParser
from pathlib import Path
from urllib.parse import unquote, urlparse


def effective_config() -> dict[str, dict[str, str]]:
    """{section: {key: value}} of pip here; PIP_* variables (":env:") override the files' [global]."""
    listing = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True,
                             check=True).stdout
    sections: dict[str, dict[str, str]] = {}
    env: dict[str, str] = {}
    for line in listing.splitlines():
        name, sep, quoted = line.partition("=")
        if not sep:
            continue
        section, _, key = name.rpartition(".")
        value = str(ast.literal_eval(quoted))
        if section == ":env:":
            env[key] = value
        else:
            sections.setdefault(section, {})[key] = value
    sections.setdefault("global", {}).update(env)
    return sections


def local_paths(value: str) -> list[Path]:
    """Existing local files or folders named by a configuration value (paths and file:// URLs).

    A file:// index counts as its parent folder: a simple index's pages link to files beside it
    (``../../files/...``).
    """
    found = []
    for word in value.split():
        if word.startswith("file://"):
            path = Path(unquote(urlparse(word).path)).parent
        else:
            path = Path(word)
        if path.is_absolute() and path.exists() and path != Path("/"):
            found.append(path)
    return found


def main(out_dir: str) -> None:
    sections = effective_config()
    conf = ConfigParser(interpolation=None)
    conf.read_dict(sections)
    pip_conf = Path(out_dir) / "pip.conf"
    with pip_conf.open("w") as f:
        conf.write(f)
    mounts = {f"{pip_conf}:/etc/pip.conf:ro"}
    for values in sections.values():
        for value in values.values():
            mounts.update(f"{path}:{path}:ro" for path in local_paths(value))
    for mount in sorted(mounts):
        print(f"--volume={mount}")


if __name__ == "__main__":
    main(sys.argv[1])
