#!/usr/bin/env bash
# Create (once) and print the path of the shared virtual environment for this checkout.
# The environment lives outside the clone, keyed by the dependency list in setup.cfg and the
# Python version, so every clone on a machine (CI included) reuses one torch install.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="${PYTHON:-python3}"
key=$("$py" - "$here/setup.cfg" <<'PY'
import configparser, hashlib, sys
cfg = configparser.ConfigParser()
cfg.read(sys.argv[1])
deps = cfg["options"]["install_requires"] + repr(sorted(cfg["options.extras_require"].items()))
print(hashlib.sha256((deps + sys.version.split()[0]).encode()).hexdigest()[:12])
PY
)
root="${FSTORE_ENV_ROOT:-$HOME/.cache/fstore-envs}"
venv="$root/venv-$key"
if [ ! -x "$venv/.ready" ]; then
  echo "fstore: building environment $venv (first run on this machine; torch is large)" >&2
  rm -rf "$venv.tmp"
  mkdir -p "$root"
  "$py" -m venv "$venv.tmp"
  "$venv.tmp/bin/pip" install -q --upgrade pip setuptools wheel >&2
  # Install the dependencies only; the project itself is installed editable per clone below.
  reqs=$("$py" - "$here/setup.cfg" <<'PY'
import configparser, sys
cfg = configparser.ConfigParser()
cfg.read(sys.argv[1])
lines = cfg["options"]["install_requires"].split("\n")
for extra in cfg["options.extras_require"].values():
    lines += extra.split("\n")
print("\n".join(l.strip() for l in lines if l.strip()))
PY
)
  echo "$reqs" > "$venv.tmp/requirements.txt"
  "$venv.tmp/bin/pip" install -r "$venv.tmp/requirements.txt" >&2
  # venvs are not relocatable: rebuild in place would be slow, so fix the paths by re-creating shims
  rm -rf "$venv"
  mv "$venv.tmp" "$venv"
  "$py" -m venv --upgrade "$venv" >/dev/null
  # shebangs of console scripts point at the .tmp path; rewrite them
  grep -l "$venv.tmp" "$venv"/bin/* 2>/dev/null | xargs -r sed -i "s#$venv.tmp#$venv#g"
  printf '#!/bin/sh\n' > "$venv/.ready" && chmod +x "$venv/.ready"
fi
# (Re)install this clone editable, without touching dependencies: cheap, and points `fstore` here.
if [ "$(cat "$venv/.clone" 2>/dev/null)" != "$here" ]; then
  "$venv/bin/pip" install -q --no-deps --no-build-isolation -e "$here" >&2
  echo "$here" > "$venv/.clone"
fi
echo "$venv"
