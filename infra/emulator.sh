#!/usr/bin/env bash
# Runs the local AWS emulator (moto) in the foreground for debugging tests by hand.
#
# Usage: infra/emulator.sh [PORT]   (default 5000; loopback only)
# Then, in another shell, paste the printed exports and run e.g. `cargo test -p shipgate`.
set -euo pipefail

# shellcheck source=infra/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$SHIPGATE_ROOT"

PORT=${1:-5000}
if ! [[ $PORT =~ ^[0-9]+$ ]] || ((PORT < 1 || PORT > 65535)); then
	die "PORT must be a TCP port number, got '$PORT'"
fi

ensure_venv
cat >&2 <<MSG

moto on http://127.0.0.1:$PORT (Ctrl-C to stop). Point tests at it with:

    export AWS_ENDPOINT_URL=http://127.0.0.1:$PORT AWS_ACCESS_KEY_ID=testing \\
      AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1 \\
      AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null \\
      AWS_EC2_METADATA_DISABLED=true SHIPGATE_TEST_EMULATOR=moto

MSG
exec "$VENV/bin/moto_server" -H 127.0.0.1 -p "$PORT"
