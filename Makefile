# Two commands on a fresh machine: `make demo` (the main job on synthetic data) and `make test`.
# Both install this clone's .venv from uv.lock and nothing else (`uv sync --frozen`: exact versions and
# hashes; packages not in the lock are removed). uv keeps one package cache per machine and hard-links
# from it, so torch is downloaded once a machine and a second clone installs in seconds.
UV := $(shell bash tools/uv.sh)
ifeq ($(UV),)
$(error tools/uv.sh could not install uv (its message is above); install uv 0.13.9 on PATH and run make again)
endif
PY := .venv/bin/python
WORK ?= /tmp/fstore-demo
LATEST ?= /tmp/fstore-latest
SYNC := $(UV) sync --frozen --all-extras
# --compile-bytecode: .pyc files written once at install. Where PYTHONDONTWRITEBYTECODE is set (this
# machine sets it) nothing else writes them, and every process (each CLI test, torchrun rank, bench
# step) compiled torch from source again: `import torch, torch._dynamo` 7.5 s of CPU, 3.1 s with the .pyc files
# (compiling them costs 45 s of CPU once per install).

.PHONY: demo test env check-env lock upgrade test-latest bench gpu-check

env:  # this clone's .venv, exactly as locked
	$(SYNC) --compile-bytecode

check-env:  # fail unless .venv equals the lock: no extra, missing or different package
	$(SYNC) --check

demo: env
	$(PY) -m models.skip.demo --workdir $(WORK)

test: env
	$(PY) -m ruff check .
	UV=$(UV) $(PY) -m pytest

lock:  # after editing setup.cfg: re-lock, moving only what the edit requires
	$(UV) lock

upgrade:  # choose upgrades: the newest versions setup.cfg allows; then `make test` and commit uv.lock
	$(UV) lock --upgrade

# The newest versions setup.cfg allows, in a scratch environment (not the lock), then the suite:
# upgrades are tried before they are chosen. OVERRIDES=file lifts pins (uv's --override), e.g. to try a
# newer torch than setup.cfg allows; PYTHON=path picks the interpreter (the newest numpy, zarr and
# numcodecs need 3.12).
test-latest:
	rm -rf $(LATEST)
	$(UV) venv -q $(if $(PYTHON),--python $(PYTHON)) $(LATEST)
	$(UV) pip install -q --python $(LATEST) --upgrade -e '.[test,bench]' $(if $(OVERRIDES),--override $(OVERRIDES))
	$(UV) pip list --python $(LATEST) --format freeze > $(LATEST)/versions.txt
	UV=$(UV) $(LATEST)/bin/python -m pytest -p no:cacheprovider

bench: env
	.venv/bin/fstore bench ingest
	.venv/bin/fstore synth spotify $(WORK)/bench-raw --sessions 200000 --tracks 50000
	.venv/bin/fstore ingest spotify $(WORK)/bench-raw $(WORK)/bench.fstore --overwrite
	.venv/bin/fstore bench loader $(WORK)/bench.fstore

gpu-check: env  # every CUDA path in one call (< 8 minutes on a GPU), one JSON report; DRY=1: the CPU plumbing
	$(PY) -m bench.gpu_check $(if $(DRY),--dry-run) --out $(WORK)/gpu_check.json
