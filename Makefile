# Two commands do all the set-up on a fresh clone (Python 3.11 with venv, GNU make):
#   make demo   # venv + install, train a Glow on the embedded digits, export it, serve a sample
#   make test   # venv + install with extras, run the whole test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.tfinv-installed
OUT ?= runs/digits-glow
EPOCHS ?= 30

.PHONY: install demo test bench clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade "pip>=24" "setuptools>=69" wheel
	$(BIN)/python -m pip install -e ".[export,serving,test,inverse]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/tfinv train --model glow --dataset digits --epochs $(EPOCHS) --out $(OUT)
	$(BIN)/tfinv export --model $(OUT)/model.keras --out $(OUT)/export --name digits --overwrite
	$(BIN)/python -m tfinv.serving.demo --export-dir $(OUT)/export --out $(OUT)/served_samples.png

test: $(STAMP)
	$(BIN)/python -m pytest tests -q -p no:cacheprovider

bench: $(STAMP)
	$(BIN)/python benchmarks/train_digits.py

clean:
	rm -rf $(VENV) runs build *.egg-info
