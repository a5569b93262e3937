#!/usr/bin/env bash
# `make browser-test` (also run by `.ci/run`): the dashboard in a real browser. Debian's
# headless Chromium, driven by Debian's ChromeDriver, against a real `shipgate serve` on the
# data the demo story leaves (tests/tests/dashboard_browser.rs). Writes a screenshot of each
# page at desktop and phone widths to docs/screenshots/ (the README shows them).
#
# Chromium and ChromeDriver come from Debian's `chromium` and `chromium-driver` packages. When
# they are missing they are installed with apt-get if this runs as root; otherwise it stops
# saying what to install.
#
# Environment:
#   SHIPGATE_TEST_CHROMIUM=/usr/bin/chromium          the browser
#   SHIPGATE_TEST_CHROMEDRIVER=/usr/bin/chromedriver  its WebDriver server
#   SHIPGATE_SCREENSHOTS_DIR=docs/screenshots         where the screenshots go
set -euo pipefail

# shellcheck source=infra/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$SHIPGATE_ROOT"

export SHIPGATE_TEST_CHROMIUM="${SHIPGATE_TEST_CHROMIUM:-/usr/bin/chromium}"
export SHIPGATE_TEST_CHROMEDRIVER="${SHIPGATE_TEST_CHROMEDRIVER:-/usr/bin/chromedriver}"
export SHIPGATE_SCREENSHOTS_DIR="${SHIPGATE_SCREENSHOTS_DIR:-$SHIPGATE_ROOT/docs/screenshots}"

have_browser() {
	[[ -x "$SHIPGATE_TEST_CHROMIUM" && -x "$SHIPGATE_TEST_CHROMEDRIVER" ]]
}

if ! have_browser; then
	if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
		section "installing Debian's chromium and chromium-driver"
		export DEBIAN_FRONTEND=noninteractive
		apt-get install -y -q chromium chromium-driver >&2 ||
			{ apt-get update -q >&2 && apt-get install -y -q chromium chromium-driver >&2; }
	fi
	have_browser || die "make browser-test needs Chromium and ChromeDriver at $SHIPGATE_TEST_CHROMIUM and $SHIPGATE_TEST_CHROMEDRIVER: install Debian's packages (sudo apt-get install chromium chromium-driver), or point SHIPGATE_TEST_CHROMIUM and SHIPGATE_TEST_CHROMEDRIVER at them"
fi

section "$("$SHIPGATE_TEST_CHROMIUM" --version 2>/dev/null | head -1); $("$SHIPGATE_TEST_CHROMEDRIVER" --version | head -1)"
mkdir -p "$SHIPGATE_SCREENSHOTS_DIR"
cargo test -p tests --test dashboard_browser -- --ignored --nocapture
log "screenshots: $SHIPGATE_SCREENSHOTS_DIR"
