#!/usr/bin/env bash
# Sesame demo — a small académie in network namespaces, on this machine, as root.
#
#   sudo packaging/demo.sh           # builds, sets everything up, leaves the portal on
#                                    # http://127.0.0.1:8080 until Ctrl-C (then removes it all)
#   sudo packaging/demo.sh --check   # the same journey, non-interactive; exit 0 only if it held
#
# What it creates (and removes on exit): namespaces sdemo-laptop, sdemo-gw, sdemo-rect; a veth
# to the host (198.18.254.1/30) for the portal relay on 127.0.0.1:8080; a work directory; the
# gateway's /var/run/wireguard/sdemogw.sock. On exit every process gets SIGTERM (5 s to stop),
# and the run fails if a process, namespace, interface or socket is left behind.
# Addresses: underlay and servers in 198.18.0.0/15, tunnel in 100.64.0.0/10, portal on loopback.
#
# Environment: SESAME_PROFILE=debug builds and uses the debug binaries (CI) instead of
# `cargo build --release`; SESAME_BIN_DIR=DIR uses already built `sesame` and `sesame-agent`
# from DIR (no build); SESAME_DEMO_PORT (default 8080) is the host port.
set -euo pipefail

CHECK=0
case "${1:-}" in
  --check) CHECK=1 ;;
  "") ;;
  -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PORT="${SESAME_DEMO_PORT:-8080}"
NS_LAP=sdemo-laptop NS_GW=sdemo-gw NS_RECT=sdemo-rect
HOST_IF=sdemoh0 AGENT_IF=sdemo0
PAIE=198.18.10.10 RH=198.18.20.10
WORK=""
PIDS=()
FAILED=0
LEFT=0
# The gateway's WireGuard API socket (interface sdemogw in config/demo/sesame.toml).
UAPI_SOCK=/var/run/wireguard/sdemogw.sock

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
ok() { printf '  \033[32m✔ %s\033[0m\n' "$*"; }
bad() { printf '  \033[31m✘ %s\033[0m\n' "$*"; FAILED=1; }
die() { printf '\033[31m%s\033[0m\n' "$*" >&2; exit 1; }
in_ns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

if [[ $EUID -ne 0 ]]; then
  die "Lancez ce script en root (sudo) / Run this script as root (sudo)."
fi

# The pids of the demo's processes: those in its namespaces and those it started on the host.
demo_pids() {
  local ns
  for ns in "$NS_LAP" "$NS_GW" "$NS_RECT"; do
    if ip netns list | grep -qw "$ns"; then ip netns pids "$ns" 2>/dev/null || true; fi
  done
  printf '%s\n' "${PIDS[@]}"
}

# Whether pid $1 still runs (a zombie waiting to be reaped does not).
running() { [[ -r /proc/$1/stat ]] && [[ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]]; }

# SIGTERM to every process of the demo, as systemd would: the servers remove their sockets
# and exit within 5 s. Whatever still runs then is killed and reported.
stop_processes() {
  local pids pid left=0
  mapfile -t pids < <(demo_pids | sort -u | grep -v '^$')
  ((${#pids[@]})) || return 0
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for _ in $(seq 50); do
    left=0
    for pid in "${pids[@]}"; do running "$pid" && left=1; done
    ((left)) || break
    sleep 0.1
  done
  for pid in "${pids[@]}"; do
    if running "$pid"; then
      echo "  ✘ toujours actif 5 s après SIGTERM / still running 5 s after SIGTERM: $pid $(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)"
      kill -9 "$pid" 2>/dev/null || true
      LEFT=1
    fi
  done
}

# What must be gone once the demo is cleaned up: fails the run otherwise.
check_nothing_left() {
  local ns pid exe
  for ns in "$NS_LAP" "$NS_GW" "$NS_RECT"; do
    if ip netns list | grep -qw "$ns"; then echo "  ✘ espace de noms restant / namespace left: $ns"; LEFT=1; fi
  done
  if ip link show "$HOST_IF" >/dev/null 2>&1; then echo "  ✘ interface restante / interface left: $HOST_IF"; LEFT=1; fi
  if [[ -e "$UAPI_SOCK" ]]; then echo "  ✘ socket restant / socket left: $UAPI_SOCK"; LEFT=1; fi
  if [[ -n "$WORK" ]]; then
    if [[ -e "$WORK/admin.sock" ]]; then echo "  ✘ socket restant / socket left: $WORK/admin.sock"; LEFT=1; fi
    for exe in /proc/[0-9]*/exe; do
      pid=${exe#/proc/}; pid=${pid%/exe}
      if [[ "$(readlink "$exe" 2>/dev/null)" == "$WORK"/* ]]; then
        echo "  ✘ processus restant / process left: $pid $(readlink "$exe")"
        LEFT=1
      fi
    done
  fi
  return 0
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  say "Nettoyage / Cleaning up"
  if [[ -n "$WORK" && -x "$WORK/bin/sesame-agent" ]] && ip netns list | grep -qw "$NS_LAP"; then
    in_ns "$NS_LAP" "$WORK/bin/sesame-agent" down --dir "$WORK/laptop" >/dev/null 2>&1 || true
  fi
  stop_processes
  for ns in "$NS_LAP" "$NS_GW" "$NS_RECT"; do
    if ip netns list | grep -qw "$ns"; then ip netns del "$ns" 2>/dev/null || true; fi
  done
  ip link del "$HOST_IF" 2>/dev/null || true
  check_nothing_left
  if [[ -n "$WORK" && -d "$WORK" ]]; then
    if [[ $rc -ne 0 || $FAILED -ne 0 || $LEFT -ne 0 ]]; then
      for log in "$WORK"/*.log "$WORK"/laptop/agent.log; do
        [[ -f "$log" ]] && { echo "--- $log (fin / tail)"; tail -n 30 "$log"; }
      done
    fi
    rm -rf "$WORK"
  fi
  if [[ $LEFT -ne 0 ]]; then
    echo "  Le nettoyage a laissé des traces (voir ci-dessus). / Cleanup left something behind (see above)."
    [[ $rc -eq 0 ]] && rc=1
  else
    echo "  Tout ce que la démo avait créé est supprimé. / Everything the demo created is removed."
  fi
  exit "$rc"
}

# --- 1. Packages ---------------------------------------------------------------------------
say "Paquets Debian / Debian packages"
need=()
command -v slapd >/dev/null || [[ -x /usr/sbin/slapd ]] || need+=(slapd)
command -v ldapadd >/dev/null || need+=(ldap-utils)
command -v ip >/dev/null || need+=(iproute2)
command -v ping >/dev/null || need+=(iputils-ping)
command -v curl >/dev/null || need+=(curl)
command -v python3 >/dev/null || need+=(python3)
command -v wg >/dev/null || need+=(wireguard-tools)
if ((${#need[@]})); then
  echo "  apt-get install ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi
ok "slapd ldap-utils iproute2 iputils-ping curl python3 wireguard-tools"

# --- 2. Build ------------------------------------------------------------------------------
if [[ -n "${SESAME_BIN_DIR:-}" ]]; then
  BIN="$SESAME_BIN_DIR"
elif [[ "${SESAME_PROFILE:-release}" == debug ]]; then
  say "Compilation / Build (cargo build, debug)"
  # The test build's feature set (workspace, dev-dependencies): after `cargo test --workspace`
  # (CI) it is all fresh; `-p` builds would resolve features apart and compile it all again.
  (cd "$ROOT" && cargo build --workspace --bins --tests)
  BIN="$ROOT/target/debug"
else
  say "Compilation / Build (cargo build --release)"
  (cd "$ROOT" && cargo build --release -p sesame -p sesame-agent)
  BIN="$ROOT/target/release"
fi
[[ -x "$BIN/sesame" && -x "$BIN/sesame-agent" ]] || die "sesame / sesame-agent introuvables dans $BIN"

# Leftovers of an interrupted run.
for ns in "$NS_LAP" "$NS_GW" "$NS_RECT"; do
  if ip netns list | grep -qw "$ns"; then
    for pid in $(ip netns pids "$ns"); do kill -9 "$pid" 2>/dev/null || true; done
    ip netns del "$ns"
  fi
done
ip link del "$HOST_IF" 2>/dev/null || true
if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
  die "Le port 127.0.0.1:$PORT est déjà pris / port 127.0.0.1:$PORT is in use (SESAME_DEMO_PORT=...)."
fi

WORK="$(mktemp -d /tmp/sesame-demo.XXXXXX)"
chmod 700 "$WORK"
trap cleanup EXIT
trap 'exit 130' INT TERM
mkdir -p "$WORK/bin" "$WORK/www/paie" "$WORK/www/rh"
cp "$BIN/sesame" "$BIN/sesame-agent" "$WORK/bin/"
SESAME="$WORK/bin/sesame"
AGENT="$WORK/bin/sesame-agent"

# --- 3. The académie's network ------------------------------------------------------------
say "Réseau de l'académie / The académie's network (namespaces)"
for ns in "$NS_LAP" "$NS_GW" "$NS_RECT"; do
  ip netns add "$ns"
  in_ns "$ns" ip link set lo up
done
veth() { # veth NAME_A NS_A ADDR_A NAME_B NS_B ADDR_B
  ip link add "$1" type veth peer name "$4"
  ip link set "$1" netns "$2"; in_ns "$2" ip addr add "$3" dev "$1"; in_ns "$2" ip link set "$1" up
  if [[ "$5" == host ]]; then
    ip addr add "$6" dev "$4"; ip link set "$4" up
  else
    ip link set "$4" netns "$5"; in_ns "$5" ip addr add "$6" dev "$4"; in_ns "$5" ip link set "$4" up
  fi
}
veth sdgl0 "$NS_GW" 198.18.1.1/30 sdlg0 "$NS_LAP" 198.18.1.2/30
veth sdgr0 "$NS_GW" 198.18.3.1/30 sdrg0 "$NS_RECT" 198.18.3.2/30
veth sdgh0 "$NS_GW" 198.18.254.2/30 "$HOST_IF" host 198.18.254.1/30
in_ns "$NS_RECT" ip addr add "$PAIE/32" dev sdrg0
in_ns "$NS_RECT" ip addr add "$RH/32" dev sdrg0
in_ns "$NS_RECT" ip route add 100.64.0.0/10 via 198.18.3.1
in_ns "$NS_GW" sysctl -qw net.ipv4.ip_forward=1
in_ns "$NS_GW" ip route add "$PAIE/32" via 198.18.3.2
in_ns "$NS_GW" ip route add "$RH/32" via 198.18.3.2
ok "portable / laptop 198.18.1.2 — passerelle / gateway 198.18.1.1 — rectorat 198.18.3.2"

echo "<h1>Paie — serveur de paie du rectorat / rectorat payroll server</h1>" >"$WORK/www/paie/index.html"
echo "<h1>RH — ressources humaines / human resources</h1>" >"$WORK/www/rh/index.html"
in_ns "$NS_RECT" python3 -m http.server --bind "$PAIE" --directory "$WORK/www/paie" 80 >"$WORK/paie.log" 2>&1 &
PIDS+=($!)
in_ns "$NS_RECT" python3 -m http.server --bind "$RH" --directory "$WORK/www/rh" 80 >"$WORK/rh.log" 2>&1 &
PIDS+=($!)
ok "serveur de paie / payroll server http://$PAIE — serveur RH / HR server http://$RH"

# --- 4. The directory (real slapd, the académie's seed) -----------------------------------
say "Annuaire LDAP / LDAP directory (slapd, config/ldap/academie.ldif)"
mkdir -p "$WORK/slapd/slapd.d" "$WORK/slapd/data"
sed -e '/# @TLS@$/d' -e "s|@DIR@|$WORK/slapd|g" "$ROOT/config/ldap/slapd-config.ldif" >"$WORK/slapd/config.ldif"
slapadd -q -n0 -F "$WORK/slapd/slapd.d" -l "$WORK/slapd/config.ldif"
in_ns "$NS_GW" /usr/sbin/slapd -h "ldap://127.0.0.1:3890/" -F "$WORK/slapd/slapd.d" -d 0 >"$WORK/slapd.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do
  in_ns "$NS_GW" ldapsearch -x -H ldap://127.0.0.1:3890 -b "" -s base >/dev/null 2>&1 && break
  sleep 0.1
done
in_ns "$NS_GW" ldapadd -x -e relax -H ldap://127.0.0.1:3890 -D cn=admin,dc=academie,dc=test -w admin-test \
  -f "$ROOT/config/ldap/academie.ldif" >/dev/null
printf '%s' sesame-service-2026 >"$WORK/ldap.password"
chmod 600 "$WORK/ldap.password"
ok "dc=academie,dc=test chargé / loaded"

# --- 5. sesame serve ---------------------------------------------------------------------
say "Portail + passerelle / Portal + gateway (sesame serve)"
sed -e "s|@WORK@|$WORK|g" "$ROOT/config/demo/sesame.toml" >"$WORK/sesame.toml"
"$SESAME" keygen --out "$WORK/gateway.key" >/dev/null
"$SESAME" check-config --config "$WORK/sesame.toml" >/dev/null
in_ns "$NS_GW" "$SESAME" serve --config "$WORK/sesame.toml" >"$WORK/serve.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 300); do
  in_ns "$NS_GW" curl -sf -m 2 http://127.0.0.1:8080/readyz >/dev/null 2>&1 && break
  sleep 0.1
done
in_ns "$NS_GW" curl -sf -m 2 http://127.0.0.1:8080/readyz >/dev/null || die "sesame serve n'a pas démarré / did not start"
python3 "$ROOT/config/demo/relay.py" 127.0.0.1 "$PORT" 198.18.254.2 8080 >"$WORK/relay.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 50); do curl -sf -m 2 "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
ok "portail / portal: http://127.0.0.1:$PORT (depuis l'hôte / from the host), http://198.18.1.1:8080 (depuis le portable / from the laptop)"

# --- 6. IT creates a code; the payroll clerk enrols her laptop ----------------------------
say "La DSI crée un code pour Marie Dupont (gestionnaire de paie) / IT creates a code for the payroll clerk"
CODE="$("$SESAME" enrol-code create --config "$WORK/sesame.toml" --user mdupont --device portable-marie --ttl 1h 2>/dev/null)"
[[ -n "$CODE" ]] || die "pas de code / no code"
ok "code : $CODE"

say "Sur le portable : sesame-agent enrol / On the laptop: sesame-agent enrol"
# Plain HTTP between namespaces: a lab, hence --insecure (the agent refuses http:// outside
# loopback otherwise).
echo "  \$ sesame-agent enrol --portal http://198.18.1.1:8080 --insecure --code $CODE --user mdupont"
if printf '%s\n' Marie-Paie-2026 | in_ns "$NS_LAP" "$AGENT" enrol --portal http://198.18.1.1:8080 --insecure \
  --code "$CODE" --user mdupont --password-stdin --dir "$WORK/laptop" | sed 's/^/  /'; then
  ok "clé générée sur le portable, seule la clé publique envoyée / key generated on the laptop, only the public key sent"
else
  bad "enrôlement refusé / enrolment refused"
  exit 1
fi

say "sesame-agent up"
if in_ns "$NS_LAP" "$AGENT" up --dir "$WORK/laptop" --interface "$AGENT_IF" | sed 's/^/  /'; then
  ok "tunnel actif / tunnel up"
else
  bad "le tunnel n'a pas démarré / the tunnel did not start"
  exit 1
fi

# --- 7. What she may reach ---------------------------------------------------------------
say "Ce que Marie peut joindre / What Marie may reach"
paie_ok=0
for _ in $(seq 20); do
  if in_ns "$NS_LAP" curl -sf -m 3 "http://$PAIE/" >"$WORK/paie.html" 2>/dev/null; then paie_ok=1; break; fi
  sleep 0.5
done
if [[ $paie_ok -eq 1 ]] && grep -q "Paie" "$WORK/paie.html"; then
  ok "La paie répond : Marie y a droit. / Payroll answers: Marie is allowed."
  echo "     $(sed 's/<[^>]*>//g' "$WORK/paie.html")"
else
  bad "La paie ne répond pas / Payroll does not answer"
fi
if in_ns "$NS_LAP" curl -sf -m 3 "http://$RH/" >/dev/null 2>&1; then
  bad "Les RH répondent alors que Marie n'y a pas droit ! / HR answers although Marie is not allowed!"
else
  ok "Les RH sont refusées : Marie n'y a pas droit. / HR is refused: Marie is not allowed."
fi

sleep 1
say "sesame-agent status"
STATUS="$(in_ns "$NS_LAP" "$AGENT" status --dir "$WORK/laptop")"
echo "$STATUS" | sed 's/^/  /'
grep -Eq "(connecté|connected) \($AGENT_IF\)" <<<"$STATUS" && grep -q -- "- paie" <<<"$STATUS" && ! grep -q -- "- rh" <<<"$STATUS" \
  || bad "l'état ne correspond pas / status does not match"

if [[ $CHECK -eq 1 ]]; then
  say "sesame-agent down"
  in_ns "$NS_LAP" "$AGENT" down --dir "$WORK/laptop" | sed 's/^/  /'
  if in_ns "$NS_LAP" ip link show "$AGENT_IF" >/dev/null 2>&1 || in_ns "$NS_LAP" ip route | grep -q "198.18.1[0-9]\.\|198.18.20\."; then
    bad "interface ou route restante / interface or route left behind"
  else
    ok "ni interface ni route restantes / no interface or route left"
  fi
  if [[ $FAILED -ne 0 ]]; then
    say "ÉCHEC / FAILED"
    exit 1
  fi
  say "Démonstration vérifiée / Demo checked: OK"
  exit 0
fi

cat <<EOF

$(printf '\033[1m')Le portail est ouvert sur http://127.0.0.1:$PORT — The portal is open on http://127.0.0.1:$PORT$(printf '\033[0m')

  Comptes de démonstration (mots de passe de TEST) / Demo accounts (TEST passwords):
    mdupont   Marie-Paie-2026     gestionnaire de paie / payroll clerk (portable enrôlé / laptop enrolled)
    sbernard  Sophie-Rh-2026      gestionnaire RH / HR officer
    tleroux   Thomas-Dsi-2026     DSI (crée les codes) / IT (creates codes)
    cgarnier  Claire-Audit-2026   auditrice / auditor
    pdurand   Paul-Prof-2026      enseignant, pas de VPN / teacher, no VPN

  Essayez / Try:
    curl -s http://127.0.0.1:$PORT/healthz
    sudo ip netns exec $NS_LAP $AGENT status --dir $WORK/laptop
    sudo ip netns exec $NS_LAP curl http://$PAIE/      # répond / answers
    sudo ip netns exec $NS_LAP curl -m 3 http://$RH/   # refusé / refused

  Ctrl-C pour tout arrêter et tout supprimer / Ctrl-C stops and removes everything.
EOF
while true; do sleep 3600 & wait $!; done
