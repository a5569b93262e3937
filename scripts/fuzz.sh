#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for a bounded time, one after another, and stops at the
# first crash, panic, timeout or out-of-memory with the path of the input that reproduces it.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET]      (default 60)
#   FUZZ_TARGETS="signature policy_toml" scripts/fuzz.sh 300
#
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz --locked`). New corpus
# entries go to fuzz/corpus/<target> (not committed); fuzz/seeds/<target> is read, never
# written. See fuzz/README.md.
set -euo pipefail

seconds="${1:-60}"
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [ "$seconds" -eq 0 ]; then
    echo "usage: $0 [SECONDS_PER_TARGET]" >&2
    exit 2
fi
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "needs the nightly toolchain and cargo-fuzz: cargo install cargo-fuzz --locked" >&2
    exit 2
fi

# -a: debug assertions and overflow checks on, so an overflow is found, not wrapped silently.
cargo +nightly fuzz build -a
targets="${FUZZ_TARGETS:-$(cargo +nightly fuzz list)}"

summary=()
for target in $targets; do
    mkdir -p "fuzz/corpus/$target" "fuzz/artifacts/$target"
    log="fuzz/artifacts/$target/run.log"
    echo "=== $target: ${seconds}s"
    # -timeout: one input taking 10 s is a denial of service on a webhook, so it is a finding.
    # -rss_limit_mb also caps single allocations (-malloc_limit_mb defaults to it).
    if ! cargo +nightly fuzz run -a "$target" "fuzz/corpus/$target" "fuzz/seeds/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
        >"$log" 2>&1; then
        tail -n 40 "$log"
        reproducer="$(grep -o 'fuzz/artifacts/[^ ]*' "$log" | grep -v '/run.log$' | tail -n 1 || true)"
        echo
        echo "FAILED: $target"
        if [ -n "$reproducer" ]; then
            echo "reproducer: $reproducer"
            echo "replay:     cargo +nightly fuzz run -a $target $reproducer"
            echo "minimise:   cargo +nightly fuzz tmin -a $target $reproducer"
        else
            echo "no reproducer written; see $log"
        fi
        exit 1
    fi
    execs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')"
    cov="$(grep -o 'cov: [0-9]* ft: [0-9]*' "$log" | tail -n 1 || echo '?')"
    corpus="$(find "fuzz/corpus/$target" -type f | wc -l)"
    summary+=("$(printf '%-20s %6ss %12s execs  %-22s corpus %s' "$target" "$seconds" "$execs" "$cov" "$corpus")")
done

echo
echo "no crashes"
printf '%s\n' "${summary[@]}"
