"""Bootstrap the bundle: a private virtual environment with the pinned
zc.buildout, then ``bin/buildout``.

Run it with the Python that should run the cluster (3.11)::

    python3 bootstrap.py            # venv + pinned zc.buildout + buildout run
    python3 bootstrap.py --no-run   # only make bin/buildout
    python3 bootstrap.py -c client.cfg   # another configuration

The buildout runs with ``local.cfg`` when there is one (an operator's
settings, extending buildout.cfg or, on a client host, client.cfg), so
that ``make`` does not undo them; otherwise with buildout.cfg.

The pins for zc.buildout and the tools it installs with (pip, setuptools,
wheel) are read from ``etc/versions.cfg`` so that there is one place for
versions.  Running it twice is safe: the virtual environment is reused,
and pip is skipped when the recorded pins have not changed.

buildout.cfg uses an extension from the bundle's own develop egg
(Products.ZEOClient), and zc.buildout loads extensions before it makes
develop eggs: on a fresh checkout there is nothing to load yet, and
after a change of the product's metadata (pyproject.toml, say a new
entry point) what it would load is stale.  So every run first makes
the develop eggs in a buildout run that loads no extension, installs no
part and records nothing, then runs the real buildout.
"""

import argparse
import configparser
import os
import subprocess
import sys
import venv

HERE = os.path.dirname(os.path.abspath(__file__))
VENV = os.path.join(HERE, ".venv")
STAMP = os.path.join(VENV, "bootstrap-pins.txt")
TOOLS = ("zc.buildout", "pip", "setuptools", "wheel")
# A buildout run that only makes the develop eggs (see above): no
# extension, no part, no .installed.cfg written; errors only (without
# parts, [buildout] var-directory would be reported unused).
DEVELOP_ONLY = ("-qq", "buildout:extensions=", "buildout:parts=", "buildout:installed=")


def fail(message):
    sys.exit("bootstrap: " + message)


def read_pins():
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str
    path = os.path.join(HERE, "etc", "versions.cfg")
    if not parser.read(path):
        fail(f"cannot read {path}")
    pins = {}
    for name in TOOLS:
        version = parser.get("versions", name, fallback=None)
        if not version:
            fail(f"{path} pins no version of {name}")
        pins[name] = version.strip()
    return pins


def venv_python():
    return os.path.join(VENV, "bin", "python")


def ensure_venv():
    python = venv_python()
    if os.path.exists(python):
        probe = subprocess.run([python, "-c", "import sys"], check=False)
        if probe.returncode == 0:
            return python
        print("bootstrap: the virtual environment is broken, recreating it")
    venv.EnvBuilder(with_pip=True, clear=True).create(VENV)
    return python


def ensure_tools(python, pins):
    wanted = "\n".join(f"{name}=={version}" for name, version in sorted(pins.items()))
    try:
        with open(STAMP) as f:
            if f.read() == wanted:
                return
    except FileNotFoundError:
        pass
    subprocess.run(
        [python, "-m", "pip", "install", "--quiet", *wanted.split("\n")],
        check=True,
    )
    with open(STAMP, "w") as f:
        f.write(wanted)


def default_config():
    return "local.cfg" if os.path.exists(os.path.join(HERE, "local.cfg")) else "buildout.cfg"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--no-run",
        action="store_true",
        help="only create bin/buildout, do not run it",
    )
    parser.add_argument(
        "-c",
        dest="config",
        default=None,
        help="the configuration file (default: local.cfg if it exists, else buildout.cfg)",
    )
    args = parser.parse_args(argv)
    if sys.version_info[:2] < (3, 10):
        fail("Python 3.10 or newer is needed, this is " + sys.version.split()[0])
    os.chdir(HERE)
    config = args.config or default_config()
    if not os.path.exists(config):
        fail(f"no configuration file {config}")
    python = ensure_venv()
    try:
        ensure_tools(python, read_pins())
    except subprocess.CalledProcessError as e:
        fail(f"installing the pinned tools failed ({e}); see pip's output above")
    buildout = os.path.join(VENV, "bin", "buildout")
    if not os.path.exists(os.path.join(HERE, "bin", "buildout")):
        subprocess.run([buildout, "-N", "bootstrap"], check=True)
    if not args.no_run:
        bin_buildout = os.path.join(HERE, "bin", "buildout")
        develop = subprocess.run(
            [bin_buildout, "-N", "-c", config, *DEVELOP_ONLY], check=False
        )
        if develop.returncode != 0:
            return develop.returncode
        result = subprocess.run([bin_buildout, "-N", "-c", config])
        return result.returncode
    return 0


if __name__ == "__main__":
    sys.exit(main())
