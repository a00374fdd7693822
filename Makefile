# distox — every target installs what it needs first (into .venv, from scratch if absent).
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.distox-installed

.PHONY: install demo test readme-demo bench-overhead clean

$(STAMP): pyproject.toml
	@command -v apt-get >/dev/null 2>&1 && ! dpkg -s dataset-fashion-mnist >/dev/null 2>&1 && \
	  { (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist) || \
	    echo "note: could not install dataset-fashion-mnist; Fashion-MNIST tests will fail"; } || true
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/distox demo

test: $(STAMP)
	$(BIN)/python -m pytest

readme-demo: $(STAMP)
	$(BIN)/python benchmarks/readme_demo.py --write

bench-overhead: $(STAMP)
	$(BIN)/python benchmarks/overhead.py

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
