# The two commands of the README. Both create .venv when it is missing and install into it.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test bench lint clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/dmm check

test: $(STAMP)
	$(PY) -m pytest -n auto -q

bench: $(STAMP)
	@for b in bench/*.py; do echo "== $$b"; $(PY) $$b; done

clean:
	rm -rf $(VENV) build *.egg-info

lint: $(STAMP)
	$(VENV)/bin/ruff check --select F,E9,B --ignore B008,B905,B023 spec model impl cli conformance tests bench tools
	# types: no error in spec/ and model/; elsewhere none beyond tools/mypy-baseline.txt
	$(PY) tools/mypy_baseline.py
