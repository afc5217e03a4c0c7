#!/usr/bin/env bash
# Installs what Sesame's demo, tests and benchmarks need on a fresh Debian machine (as root),
# only when missing. Usage: packaging/install-deps.sh [test|demo|bench|fuzz]...
set -euo pipefail

want_pkgs=(build-essential pkg-config iproute2 iputils-ping curl ca-certificates python3
           slapd ldap-utils wireguard-tools wireguard-go openssl)
for role in "$@"; do
  case "$role" in
    # chromium + chromium-driver: the web portal's browser tests (tests/web_browser.rs).
    test) want_pkgs+=(postgresql postgresql-client iperf3 chromium chromium-driver nodejs npm) ;;
    bench) want_pkgs+=(iperf3) ;;
    demo|fuzz) ;;
    *) echo "install-deps: unknown role $role (use test, demo, bench or fuzz)" >&2; exit 2 ;;
  esac
done

missing=()
for p in "${want_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # slapd's postinst must not prompt; its default database is unused (tests start their own slapd).
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The distribution's own slapd/postgresql services are not used: tests start private instances.
systemctl disable --now slapd >/dev/null 2>&1 || true

if ! command -v cargo >/dev/null 2>&1; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  else
    echo "install-deps: installing the Rust toolchain from Debian (rustup is not reachable here)" >&2
    apt-get install -y -qq cargo rustc >/dev/null
  fi
fi

for role in "$@"; do
  # axe-core for the browser tests' accessibility checks, pinned by tests/browser/package-lock.json.
  if [ "$role" = test ] && [ ! -f "$(dirname "$0")/../tests/browser/node_modules/axe-core/axe.min.js" ]; then
    npm ci --no-audit --no-fund --prefix "$(dirname "$0")/../tests/browser" >/dev/null
  fi
  if [ "$role" = fuzz ] && ! cargo fuzz --version >/dev/null 2>&1; then
    echo "install-deps: installing cargo-fuzz" >&2
    cargo install --locked cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz
  fi
done
