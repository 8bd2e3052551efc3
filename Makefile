# The two entry points of a fresh clone (see README.md):
#   make demo   set everything up, then run the finetune flow end to end on the CPU demo config
#   make test   set everything up, then run the test suite
.PHONY: setup demo test bench stack-up stack-down

export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export DO_NOT_TRACK ?= 1
export TOKENIZERS_PARALLELISM ?= false

setup:
	bash scripts/setup.sh

# A gate rejection (exit 3) is a result of the demo, printed in its summary, not a failure of the command.
demo: setup
	.venv/bin/finetune run configs/regulator-cpu.yaml || { rc=$$?; [ $$rc -eq 3 ] && \
	  echo "demo finished: the deployment gate rejected the model; its summary above says why"; }

test: setup
	.venv/bin/python -m pytest -q

bench: setup
	.venv/bin/python -m bench

# The local Prefect server + worker with the deployments of prefect.yaml (UI: http://127.0.0.1:4200, or PREFECT_PORT).
stack-up: setup
	bash scripts/stack.sh up

stack-down:
	bash scripts/stack.sh down
