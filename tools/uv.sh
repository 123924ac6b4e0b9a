#!/usr/bin/env bash
# Print the path of the uv this project pins, installing it first where this machine lacks it.
#
# uv installs everything else, exactly as uv.lock says. uv itself is bootstrapped from PyPI once per
# machine into a small tools folder shared by every clone (~/.cache/fstore-tools/uv-<version>, 40 MB).
# A uv already on PATH is used when it is the pinned version. Change the pin here and in pyproject.toml
# ([tool.uv] required-version) together.
set -euo pipefail
version=0.13.9
if command -v uv >/dev/null 2>&1 && [ "$(uv --version 2>/dev/null | cut -d' ' -f2)" = "$version" ]; then
  command -v uv
  exit 0
fi
home="${FSTORE_TOOLS:-$HOME/.cache/fstore-tools}/uv-$version"
if [ ! -x "$home/bin/uv" ]; then
  echo "fstore: installing uv $version into $home (once per machine)" >&2
  rm -rf "$home.tmp"
  mkdir -p "$(dirname "$home")"
  "${PYTHON:-python3}" -m venv "$home.tmp"
  "$home.tmp/bin/python" -m pip install -q --disable-pip-version-check "uv==$version" >&2
  rm -rf "$home"
  mv "$home.tmp" "$home"  # uv is one static binary: the move does not break it
fi
echo "$home/bin/uv"
