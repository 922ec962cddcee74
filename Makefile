# Quick start: `make demo` (train on built-in MultiMNIST and compare with single-task models), `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.taskloom-installed
PIP := $(BIN)/python -m pip install --quiet --disable-pip-version-check -c requirements/constraints.txt

.PHONY: demo test install browser benchmark clean

install: $(STAMP)

$(STAMP): pyproject.toml requirements/constraints.txt requirements/no-deps.txt requirements/extras-nlp.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) torch==2.13.0
	$(PIP) -e ".[dev]"
	$(PIP) --no-deps -r requirements/no-deps.txt -r requirements/extras-nlp.txt
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/taskloom run

# The report tests render the HTML report in headless Chromium (Debian package); they skip with a reason
# where it cannot be installed.
browser:
	@command -v chromium >/dev/null 2>&1 || { (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) \
	  || echo "note: chromium could not be installed; the browser test of the report will be skipped"; }

test: $(STAMP) browser
	OMP_NUM_THREADS=2 $(BIN)/python -m pytest

benchmark: $(STAMP)
	$(BIN)/python benchmarks/overhead.py

clean:
	rm -rf $(VENV) runs test-artifacts
