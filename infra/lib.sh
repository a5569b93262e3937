# shellcheck shell=bash
# Helpers shared by infra/test.sh and infra/emulator.sh: the Python tool virtualenv and the
# local AWS emulator (moto). Sourced, not executed.

SHIPGATE_ROOT=${SHIPGATE_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
VENV=${SHIPGATE_VENV:-$SHIPGATE_ROOT/.venv}
REQUIREMENTS=$SHIPGATE_ROOT/infra/requirements-test.txt
# The stamp records exactly what was installed; when it matches, reinstalling is skipped.
VENV_STAMP=$VENV/.shipgate-requirements.stamp
MOTO_DIR=$SHIPGATE_ROOT/.moto

log() { printf '%s\n' "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}

section() {
	if [[ -t 2 ]]; then
		printf '\n\033[1m==> %s\033[0m  (%s)\n' "$*" "$(date +%H:%M:%S)" >&2
	else
		printf '\n==> %s  (%s)\n' "$*" "$(date +%H:%M:%S)" >&2
	fi
}

# Prints the first Python >= 3.9 found (aws-sam-cli's floor); 3.11 is what CI uses.
find_python() {
	local candidate
	for candidate in "${PYTHON:-}" python3.11 python3.12 python3.13 python3 python; do
		[[ -n $candidate ]] || continue
		command -v "$candidate" >/dev/null 2>&1 || continue
		if "$candidate" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 9) else 1)' 2>/dev/null; then
			command -v "$candidate"
			return 0
		fi
	done
	return 1
}

venv_stamp_content() {
	"$VENV/bin/python" -c 'import sys; print(sys.version)'
	cat "$REQUIREMENTS"
}

# Creates .venv and installs the pinned tools, unless the stamp says they are already there.
ensure_venv() {
	if [[ -x $VENV/bin/python ]] && "$VENV/bin/python" -c '' 2>/dev/null &&
		[[ -f $VENV_STAMP ]] && diff -q <(venv_stamp_content) "$VENV_STAMP" >/dev/null 2>&1; then
		log "tools already installed in $VENV (stamp matches $REQUIREMENTS)"
		return 0
	fi

	local python
	python=$(find_python) || die "Python >= 3.9 (3.11 recommended) not found; set PYTHON=/path/to/python3.11"

	# A venv whose interpreter no longer runs (Python upgraded or removed) is rebuilt from scratch.
	if [[ -d $VENV ]] && ! "$VENV/bin/python" -c '' 2>/dev/null; then
		log "removing broken virtualenv $VENV"
		rm -rf "$VENV"
	fi
	if [[ ! -x $VENV/bin/python ]]; then
		log "creating virtualenv $VENV with $python"
		"$python" -m venv "$VENV" ||
			die "could not create $VENV (on Debian/Ubuntu install the python3-venv package)"
	fi

	rm -f "$VENV_STAMP"
	log "installing $(grep -v '^#' "$REQUIREMENTS" | xargs) into $VENV"
	"$VENV/bin/python" -m pip install --disable-pip-version-check --quiet -r "$REQUIREMENTS" ||
		die "pip install -r $REQUIREMENTS failed"
	venv_stamp_content >"$VENV_STAMP"
}

free_port() {
	"$VENV/bin/python" - <<'PY'
import socket
with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(("127.0.0.1", 0))
    print(s.getsockname()[1])
PY
}

moto_answers() {
	"$VENV/bin/python" - "$1" <<'PY' >/dev/null 2>&1
import sys, urllib.request
with urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/moto-api/", timeout=1) as r:
    sys.exit(0 if r.status == 200 else 1)
PY
}

MOTO_PID=
MOTO_PORT=
MOTO_LOG=

# Starts moto's server on a free loopback port and waits until it answers. Sets MOTO_PID,
# MOTO_PORT and MOTO_LOG. Retries on another port if the one picked was taken meanwhile.
# Returns non-zero (never skips) when moto cannot be started.
start_moto() {
	local attempt i
	mkdir -p "$MOTO_DIR"
	# Logs are kept after a run for debugging; older runs' logs are cleared here.
	find "$MOTO_DIR" -name 'moto-*.log' -mmin +120 -delete 2>/dev/null || true
	if [[ ! -x $VENV/bin/moto_server ]]; then
		log "error: moto_server missing from $VENV; delete $VENV_STAMP and rerun"
		return 1
	fi
	for attempt in 1 2 3; do
		MOTO_PORT=$(free_port)
		MOTO_LOG=$MOTO_DIR/moto-$MOTO_PORT.log
		"$VENV/bin/moto_server" -H 127.0.0.1 -p "$MOTO_PORT" >"$MOTO_LOG" 2>&1 &
		MOTO_PID=$!
		for ((i = 0; i < 150; i++)); do
			if ! kill -0 "$MOTO_PID" 2>/dev/null; then
				break
			fi
			if moto_answers "$MOTO_PORT"; then
				log "moto listening on http://127.0.0.1:$MOTO_PORT (pid $MOTO_PID, log $MOTO_LOG)"
				return 0
			fi
			sleep 0.2
		done
		log "moto did not come up on port $MOTO_PORT (attempt $attempt); its log:"
		sed 's/^/    /' "$MOTO_LOG" >&2 || true
		stop_moto
	done
	log "error: could not start the AWS emulator (moto_server); the emulator tests cannot run"
	return 1
}

stop_moto() {
	[[ -n $MOTO_PID ]] || return 0
	if kill -0 "$MOTO_PID" 2>/dev/null; then
		kill "$MOTO_PID" 2>/dev/null || true
		local i
		for ((i = 0; i < 50; i++)); do
			kill -0 "$MOTO_PID" 2>/dev/null || break
			sleep 0.1
		done
		kill -9 "$MOTO_PID" 2>/dev/null || true
	fi
	wait "$MOTO_PID" 2>/dev/null || true
	log "moto (pid $MOTO_PID) stopped"
	MOTO_PID=
}

# Points every AWS client at the emulator with dummy credentials, and cuts off anything that
# could reach real AWS: the developer's profiles and config files, and the instance metadata
# endpoint the SDKs probe for credentials.
export_emulator_env() {
	local endpoint=$1
	unset AWS_PROFILE AWS_DEFAULT_PROFILE AWS_SESSION_TOKEN AWS_SECURITY_TOKEN AWS_ROLE_ARN \
		AWS_WEB_IDENTITY_TOKEN_FILE AWS_CONTAINER_CREDENTIALS_RELATIVE_URI \
		AWS_CONTAINER_CREDENTIALS_FULL_URI
	export AWS_ENDPOINT_URL=$endpoint
	export AWS_ACCESS_KEY_ID=testing
	export AWS_SECRET_ACCESS_KEY=testing
	export AWS_REGION=us-east-1
	export AWS_DEFAULT_REGION=us-east-1
	export AWS_CONFIG_FILE=/dev/null
	export AWS_SHARED_CREDENTIALS_FILE=/dev/null
	export AWS_EC2_METADATA_DISABLED=true
	export SHIPGATE_TEST_EMULATOR=moto
}
