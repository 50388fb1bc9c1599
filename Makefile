# Set-up and everyday commands. Both targets are idempotent: the install step re-runs only when
# pyproject.toml changes.
PY ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo test install bench clean

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PY) -m venv $(VENV)
	# PyTorch first and pinned, so nothing later pulls a CUDA build.
	$(VENV)/bin/pip install -q --disable-pip-version-check torch==2.13.0
	$(VENV)/bin/pip install -q --disable-pip-version-check -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/grouprobust demo

test: $(STAMP)
	$(VENV)/bin/python -m pytest

bench: $(STAMP)
	for f in benchmarks/*.py; do $(VENV)/bin/python $$f || exit 1; done

clean:
	rm -rf $(VENV) runs .pytest_cache
