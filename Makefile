# Two commands on a fresh machine: `make demo` (the main job on synthetic data) and `make test`.
# tools/env.sh gives this clone a thin .venv over one shared dependency environment per machine
# (keyed by setup.cfg's dependency list), so torch is downloaded once and reused by every clone.
VENV := $(shell bash tools/env.sh)
PY := $(VENV)/bin/python
WORK ?= /tmp/fstore-demo

.PHONY: demo test bench env

env:
	@echo $(VENV)

demo:
	$(PY) -m models.skip.demo --workdir $(WORK)

test:
	$(PY) -m ruff check .
	$(PY) -m pytest

bench:
	$(VENV)/bin/fstore bench ingest
	$(VENV)/bin/fstore synth spotify $(WORK)/bench-raw --sessions 200000 --tracks 50000
	$(VENV)/bin/fstore ingest spotify $(WORK)/bench-raw $(WORK)/bench.fstore --overwrite
	$(VENV)/bin/fstore bench loader $(WORK)/bench.fstore
