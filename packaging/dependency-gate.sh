#!/usr/bin/env bash
# The dependency gate (run by .ci/run): `cargo deny check` against deny.toml, for advisories,
# licences, sources and bans. Exit 0 only if it passes.
#
# Advisories come from .ci/advisory-db (Sesame's reviewed copy of the RustSec entries that
# concern its dependencies; see its README), because CI reaches package registries only. Where
# GitHub is reachable, SESAME_DENY_FETCH=1 checks against the live RustSec database instead.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

if [ "${SESAME_DENY_FETCH:-0}" = 1 ]; then
  export SESAME_ADVISORY_DBS="${SESAME_ADVISORY_DBS:-$HOME/.cargo/advisory-dbs}"
  exec cargo deny --workspace --locked check --hide-inclusion-graph
fi

# cargo-deny opens its database as a git checkout named after the RustSec URL
# (advisory-db-<hash of the URL>); the review date stands for the fetch time, so the
# staleness limit of deny.toml counts from the last review.
dbs=$(mktemp -d)
trap 'rm -rf "$dbs"' EXIT
db="$dbs/advisory-db-3157b0e258782691"
reviewed=$(tr -d '[:space:]' <.ci/advisory-db/REVIEWED)
mkdir -p "$db"
cp -R .ci/advisory-db/. "$db/"
(
  cd "$db"
  git init -q -b main
  git add -A
  GIT_AUTHOR_DATE="${reviewed}T00:00:00Z" GIT_COMMITTER_DATE="${reviewed}T00:00:00Z" \
    git -c user.name=sesame -c user.email=ci@localhost commit -q -m "reviewed $reviewed"
  : >.git/FETCH_HEAD
  touch -d "${reviewed}T00:00:00Z" .git/FETCH_HEAD .git/HEAD
)
echo "dependency gate: advisories from .ci/advisory-db (reviewed $reviewed)"
# Offline from here: every crate of the lock file (all targets) from crates.io first.
cargo fetch --locked --quiet
SESAME_ADVISORY_DBS="$dbs" cargo deny --workspace --frozen check --hide-inclusion-graph
