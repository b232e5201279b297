# Shortcuts over the scripts in .ci/ (the README's commands work without make).
.PHONY: demo test lint bench screenshots clean-lab dist

demo:
	bash .ci/demo

test:
	bash .ci/test

lint:
	.venv/bin/ruff check . && .venv/bin/mypy

bench:
	.venv/bin/python -m bench.server_fanout --nodes 1000

screenshots:
	bash .ci/screenshots

clean-lab:
	.venv/bin/python -m tests.lab.cleanup

# Debian packages for amd64 and arm64 (pcloud, pcloud-gui) into dist/
dist:
	bash packaging/build
