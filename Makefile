# Two commands on a fresh machine: `make demo` (the main job on synthetic data) and `make test`.
# The virtual environment lives outside the clone, keyed by the dependency list (tools/env.sh),
# so torch is downloaded once per machine and reused by every clone, CI included.
VENV := $(shell bash tools/env.sh)
PY := $(VENV)/bin/python
WORK ?= /tmp/fstore-demo

.PHONY: demo test lint bench env

env:
	@echo $(VENV)

demo:
	$(PY) -m models.skip.demo --workdir $(WORK)

test:
	$(VENV)/bin/ruff check .
	$(PY) -m pytest

bench:
	$(VENV)/bin/fstore bench ingest
	$(VENV)/bin/fstore synth spotify $(WORK)/bench-raw --sessions 200000 --tracks 50000
	$(VENV)/bin/fstore ingest spotify $(WORK)/bench-raw $(WORK)/bench.fstore --overwrite
	$(VENV)/bin/fstore bench loader $(WORK)/bench.fstore
