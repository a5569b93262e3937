#!/usr/bin/env bash
# `make package`: builds the five Lambda functions as arm64 `bootstrap` binaries with cargo-lambda
# (zig, from the ziglang wheel, is the cross-compiler and linker: no Docker, no aarch64 gcc), then
# runs `sam build` so that .aws-sam/build/template.yaml points at them, ready for `sam deploy`.
#
# Usage: infra/package.sh
# Environment:
#   PYTHON=/path/python3.11  interpreter for .venv if it has to be created
#   SHIPGATE_VENV=DIR        virtualenv location (default: .venv)
#   CARGO_BUILD_JOBS=N       cargo's parallelism (default: every core); on a shared machine run
#                            `CARGO_BUILD_JOBS=1 nice -n 19 make package`
#
# Produces target/lambda/<function>/bootstrap (one directory per function, as cargo-lambda lays
# them out) and .aws-sam/build/{template.yaml,<LogicalId>/bootstrap}.
#
# The functions are compiled here first, with exactly the command `sam build` runs for a
# `BuildMethod: rust-cargolambda` function (`cargo lambda build --release --arm64 --bin NAME` in the
# workspace root, into the shared target/). That shows cargo's own output and timings, which
# `sam build` hides, and leaves `sam build` with nothing to compile: it finds every crate fresh
# and only copies the binaries.
#
# Profile: the workspace's [profile.release] (third-party crates at opt-level "s", hot crates at 3;
# see docs/benchmarks-raw/cold-start.md); cargo-lambda adds `panic = "abort"` because that profile
# leaves it out. sam hard-codes `--release`, so a custom profile would make sam rebuild.
set -euo pipefail

# shellcheck source=infra/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$SHIPGATE_ROOT"

FUNCTIONS=(github-webhook slack-approval alert-webhook scheduled-jobs notifier)
RUST_TARGET=aarch64-unknown-linux-gnu
PACKAGE_REQUIREMENTS=$SHIPGATE_ROOT/infra/requirements-package.txt
TEST_REQUIREMENTS=$SHIPGATE_ROOT/infra/requirements-test.txt
# A stamp of its own, so installing the packaging tools never invalidates the test tools' stamp.
PACKAGE_STAMP=$VENV/.shipgate-package.stamp
LAMBDA_DIR=$SHIPGATE_ROOT/target/lambda
SAM_BUILD_DIR=$SHIPGATE_ROOT/.aws-sam/build

RESULTS=()
STARTED=$SECONDS

print_summary() {
	((${#RESULTS[@]} > 0)) || return 0
	section "summary ($((SECONDS - STARTED)) s)"
	printf '  %s\n' "${RESULTS[@]}" >&2
}
trap print_summary EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

record() { RESULTS+=("$(printf '%5ss  %s' "$1" "$2")"); }

# Both requirement files install into the same .venv; two different sam-cli pins would make each
# of `make test` and `make package` reinstall the other's on every run.
check_sam_pins_agree() {
	local package_pin test_pin
	package_pin=$(grep -E '^aws-sam-cli==' "$PACKAGE_REQUIREMENTS" || true)
	test_pin=$(grep -E '^aws-sam-cli==' "$TEST_REQUIREMENTS" || true)
	[[ -n $package_pin ]] || die "no aws-sam-cli==VERSION line in $PACKAGE_REQUIREMENTS"
	[[ $package_pin == "$test_pin" ]] ||
		die "aws-sam-cli is pinned as '$package_pin' in $PACKAGE_REQUIREMENTS but '$test_pin' in $TEST_REQUIREMENTS; make them equal"
}

ensure_rust_target() {
	if command -v rustup >/dev/null 2>&1; then
		# A no-op, offline, when the target is already installed.
		rustup target add "$RUST_TARGET" || die "rustup target add $RUST_TARGET failed"
		return 0
	fi
	# Without rustup (a distribution's Rust) the standard library must already be there.
	[[ -d "$(rustc --print sysroot)/lib/rustlib/$RUST_TARGET" ]] ||
		die "the Rust standard library for $RUST_TARGET is missing and rustup is not installed"
}

build_function() {
	local name=$1 start=$SECONDS
	log "cargo lambda build --release --arm64 --locked --bin $name"
	cargo lambda build --release --arm64 --locked --bin "$name" ||
		die "cargo lambda build failed for $name (output above)"
	[[ -f $LAMBDA_DIR/$name/bootstrap ]] || die "cargo lambda did not produce $LAMBDA_DIR/$name/bootstrap"
	record $((SECONDS - start)) "cargo lambda build --bin $name"
}

# `cached = true` in samconfig.toml would make sam hash every function's CodeUri, which is the
# workspace root here (target/ and .venv included); cargo's own fingerprints already make a
# rebuild of unchanged crates free, so the sam cache is turned off.
sam_build() {
	local start=$SECONDS
	rm -rf "$SAM_BUILD_DIR"
	# rust-cargolambda only builds in source; saying so keeps sam from warning about it.
	env SAM_CLI_TELEMETRY=0 "$VENV/bin/sam" build --beta-features --no-cached --build-in-source \
		--template-file template.yaml --build-dir "$SAM_BUILD_DIR" ||
		die "sam build failed (output above)"
	record $((SECONDS - start)) "sam build --beta-features"
}

# Reads the built template and checks that every function's CodeUri holds an aarch64 ELF
# `bootstrap` identical to the one cargo-lambda built for its Binary, then prints the table
# that README.md's "Packaging and deploying" section shows.
verify_artifacts() {
	"$VENV/bin/python" - "$SAM_BUILD_DIR" "$LAMBDA_DIR" <<'PY'
import filecmp
import io
import os
import sys
import zipfile

import yaml

build_dir, lambda_dir = sys.argv[1], sys.argv[2]


class TemplateLoader(yaml.SafeLoader):
    """Reads CloudFormation's short-form tags (!Ref, !Sub, ...) without interpreting them."""


TemplateLoader.add_multi_constructor("!", lambda loader, suffix, node: None)

with open(os.path.join(build_dir, "template.yaml"), encoding="utf-8") as f:
    template = yaml.load(f, Loader=TemplateLoader)

problems, rows = [], []
for logical_id, resource in sorted(template.get("Resources", {}).items()):
    if resource.get("Type") != "AWS::Serverless::Function":
        continue
    binary = ((resource.get("Metadata") or {}).get("BuildProperties") or {}).get("Binary")
    code_uri = (resource.get("Properties") or {}).get("CodeUri")
    if not binary or not isinstance(code_uri, str):
        problems.append(f"{logical_id}: no Metadata.BuildProperties.Binary or CodeUri")
        continue
    built = os.path.normpath(os.path.join(build_dir, code_uri, "bootstrap"))
    source = os.path.join(lambda_dir, binary, "bootstrap")
    if not os.path.isfile(built):
        problems.append(f"{logical_id}: CodeUri {code_uri} has no bootstrap ({built})")
        continue
    with open(built, "rb") as f:
        header = f.read(20)
    # ELF magic, 64-bit class, little-endian, e_machine 183 (EM_AARCH64).
    if not (header[:4] == b"\x7fELF" and header[4] == 2 and header[5] == 1
            and int.from_bytes(header[18:20], "little") == 183):
        problems.append(f"{logical_id}: {built} is not a 64-bit little-endian aarch64 ELF file")
    if not os.access(built, os.X_OK):
        problems.append(f"{logical_id}: {built} is not executable")
    if not filecmp.cmp(built, source, shallow=False):
        problems.append(f"{logical_id}: {built} differs from {source}")
    # What `sam deploy` uploads: the bootstrap deflated into a zip, as sam packages it.
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.write(built, "bootstrap")
    rows.append((binary, logical_id, os.path.relpath(built), os.path.getsize(built),
                 len(buffer.getvalue())))

if not rows:
    problems.append("the built template has no AWS::Serverless::Function")
for p in problems:
    print(f"error: {p}", file=sys.stderr)
if problems:
    sys.exit(1)

print("| function | built artifact | stripped (bytes) | MiB | zipped (MiB) |")
print("|---|---|---:|---:|---:|")
for binary, logical_id, path, size, zipped in rows:
    print(f"| `{binary}` | `{path}` | {size:,} | {size / 2**20:.1f} | {zipped / 2**20:.1f} |")
PY
}

section "tools (.venv: cargo-lambda with zig, aws-sam-cli; rustup target $RUST_TARGET)"
check_sam_pins_agree
REQUIREMENTS=$PACKAGE_REQUIREMENTS VENV_STAMP=$PACKAGE_STAMP ensure_venv
ensure_rust_target
# cargo-lambda looks for `zig` on PATH and then for `python3 -m ziglang`: the venv's python3.
export PATH=$VENV/bin:$PATH
log "$(rustc --version), $(cargo --version), $(cargo lambda --version), zig $(python3 -m ziglang version), $(SAM_CLI_TELEMETRY=0 sam --version)"

section "cargo lambda build --release --arm64 (${#FUNCTIONS[@]} functions, jobs: ${CARGO_BUILD_JOBS:-all cores})"
for fn in "${FUNCTIONS[@]}"; do
	build_function "$fn"
done

section "sam build --beta-features (BuildMethod: rust-cargolambda)"
sam_build

section "artifacts"
for fn in "${FUNCTIONS[@]}"; do
	ls -l "target/lambda/$fn/bootstrap" >&2
done
if command -v file >/dev/null 2>&1; then
	for fn in "${FUNCTIONS[@]}"; do
		file "target/lambda/$fn/bootstrap" >&2
	done
fi
verify_artifacts || die "the built template does not point at the aarch64 bootstraps (see above)"
log "deploy with: .venv/bin/sam deploy --guided  (see README.md, \"Packaging and deploying\")"
