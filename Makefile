# shipgate developer entry points. `make test` is the one command CI runs (via .ci/run).

SHELL := /usr/bin/env bash
.DEFAULT_GOAL := help
PORT ?= 5000

.PHONY: help test browser-test lint fmt emulator venv demo package

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

test: ## fmt check, clippy, adapters per build, workspace tests against moto, cfn-lint, sam validate, actionlint
	infra/test.sh

browser-test: ## the dashboard in headless Chromium (installs Debian's chromium and chromium-driver when missing); writes docs/screenshots
	infra/browser-test.sh

lint: ## fmt check, clippy, adapters per build, cfn-lint, sam validate and actionlint (no tests)
	infra/test.sh fmt clippy deps cfn-lint sam-validate actionlint

fmt: ## format the workspace in place
	cargo fmt --all

emulator: ## run moto in the foreground on 127.0.0.1:$(PORT) for debugging tests
	infra/emulator.sh $(PORT)

venv: ## create .venv with the pinned Python tools (moto, cfn-lint, aws-sam-cli)
	source infra/lib.sh && ensure_venv

demo: ## build (dev profile) and play the demo story: approvals, a rollback, backups (no network)
	cargo run -p shipgate-cli -- demo

package: ## build the arm64 Lambda bootstraps (cargo-lambda + zig) and .aws-sam/build for sam deploy
	infra/package.sh
