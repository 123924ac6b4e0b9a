#!/usr/bin/env bash
# Print the path of this clone's Python environment, creating what is missing first.
#
# Two layers, so torch is downloaded once per machine but every clone runs its own code:
# - a shared environment with the dependencies only, outside the clone, keyed by the dependency
#   list in setup.cfg and the Python version (~/.cache/fstore-envs/venv-<key>, several GB);
# - a thin per-clone `.venv` (no pip, seconds to make) that sees the shared packages through a
#   .pth file and holds this clone's editable install, so `.venv/bin/fstore` is this clone's fstore.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="${PYTHON:-python3}"
read_cfg() {  # print setup.cfg's dependency lines (install_requires + every extra)
  "$py" - "$here/setup.cfg" "$1" <<'PY'
import configparser, hashlib, sys
cfg = configparser.ConfigParser()
cfg.read(sys.argv[1])
lines = cfg["options"]["install_requires"].split("\n")
for extra in cfg["options.extras_require"].values():
    lines += extra.split("\n")
reqs = "\n".join(line.strip() for line in lines if line.strip())
if sys.argv[2] == "key":
    deps = cfg["options"]["install_requires"] + repr(sorted(cfg["options.extras_require"].items()))
    print(hashlib.sha256((deps + sys.version.split()[0]).encode()).hexdigest()[:12])
else:
    print(reqs)
PY
}
root="${FSTORE_ENV_ROOT:-$HOME/.cache/fstore-envs}"
shared="$root/venv-$(read_cfg key)"
if [ ! -x "$shared/.ready" ]; then
  echo "fstore: building the shared environment $shared (first run on this machine; torch is large)" >&2
  rm -rf "$shared.tmp"
  mkdir -p "$root"
  "$py" -m venv "$shared.tmp"
  "$shared.tmp/bin/pip" install -q --upgrade pip setuptools wheel >&2
  read_cfg reqs > "$shared.tmp/requirements.txt"
  "$shared.tmp/bin/pip" install -r "$shared.tmp/requirements.txt" >&2
  rm -rf "$shared"
  mv "$shared.tmp" "$shared"
  "$py" -m venv --upgrade "$shared" >/dev/null
  # console scripts' shebangs name the .tmp path they were installed under
  # (a bin/__pycache__ folder, e.g. from jmespath's jp.py, makes grep exit 2: not an error here)
  { grep -l "$shared.tmp" "$shared"/bin/* 2>/dev/null || true; } | xargs -r sed -i "s#$shared.tmp#$shared#g"
  printf '#!/bin/sh\n' > "$shared/.ready" && chmod +x "$shared/.ready"
fi
# Earlier versions installed the project itself into the shared environment: remove it, so no
# clone's code can shadow another's.
if compgen -G "$shared/lib/python*/site-packages/__editable__*fstore*" >/dev/null; then
  "$shared/bin/pip" uninstall -q -y fstore >&2 || true
fi
venv="$here/.venv"
# the editable install records setup.cfg's entry points (console script, numcodecs codecs): redo it
# when setup.cfg changes
stamp="$shared $(sha256sum "$here/setup.cfg" | cut -c1-16)"
if [ "$(cat "$venv/.fstore-shared" 2>/dev/null)" != "$stamp" ] || [ ! -x "$venv/bin/fstore" ]; then
  rm -rf "$venv"
  "$py" -m venv --without-pip "$venv"
  site_own=$("$venv/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
  site_shared=$("$shared/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
  echo "import site; site.addsitedir('$site_shared')" > "$site_own/_fstore_shared_env.pth"
  "$shared/bin/pip" --python "$venv/bin/python" install -q --no-deps --no-build-isolation -e "$here" >&2 2>/dev/null \
    || "$shared/bin/pip" --python "$venv/bin/python" install --no-deps --no-build-isolation -e "$here" >&2
  echo "$stamp" > "$venv/.fstore-shared"
fi
echo "$venv"
