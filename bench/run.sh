#!/usr/bin/env bash
# Sesame side-by-side benchmark (issue 2). Builds everything, builds one namespace topology,
# measures sesame, Debian's wireguard-go and boringtun-cli 0.7 on it in one run, prints a table
# of ratios and writes it to bench/REPORT.md. Run as root:
#   bench/run.sh            full run (3 repetitions of 10 s, ~10 min)
#   bench/run.sh --quick    1 repetition of 3 s
#   bench/run.sh --smoke    ~1 s per step: checks each tool runs and prints a number (for CI)
#   SESAME_BENCH_STEPS=pairs bench/run.sh [--quick]: the pair measurements only (no tunnel,
#     wireguard-go, boringtun-cli, sesame gateway, sesame serve, site gateway); prints its table
#     and leaves bench/REPORT.md alone
# Network safety: only namespaces created here (removed on exit), underlay 198.18.0.0/15,
# tunnel 100.64.0.0/10; every tool is bounded in time.
set -euo pipefail

MODE=full
case "${1:-}" in
  "") ;;
  --quick) MODE=quick ;;
  --smoke) MODE=smoke ;;
  *) echo "usage: $0 [--quick|--smoke]" >&2; exit 2 ;;
esac
case $MODE in
  full)  REPS=3; SECS=10; RAW_SECS=3; PEER_COUNTS="1 100 1000"; HS_PEERS=1000; BIG=10000 ;;
  quick) REPS=1; SECS=3;  RAW_SECS=2; PEER_COUNTS="1 100 1000"; HS_PEERS=1000; BIG=10000 ;;
  smoke) REPS=1; SECS=1;  RAW_SECS=0.3; PEER_COUNTS="1 10";     HS_PEERS=100;  BIG=1000 ;;
esac
# Audit events appended per backend (audit_insert), in batches of AUDIT_BATCH.
case $MODE in
  full) AUDIT_EVENTS=200000 ;; quick) AUDIT_EVENTS=50000 ;; smoke) AUDIT_EVENTS=2000 ;;
esac
AUDIT_BATCH=512
# Audit log size of the query benchmark (full: ~8 GB of SQLite in $TMPDIR while it runs).
case $MODE in
  full)  AUDITQ_EVENTS=${AUDITQ_EVENTS:-10000000}; AUDITQ_USERS=1000 ;;
  quick) AUDITQ_EVENTS=${AUDITQ_EVENTS:-1000000};  AUDITQ_USERS=1000 ;;
  smoke) AUDITQ_EVENTS=${AUDITQ_EVENTS:-5000};     AUDITQ_USERS=20 ;;
esac

STEPS=${SESAME_BENCH_STEPS:-all}
case $STEPS in all|pairs) ;; *) echo "SESAME_BENCH_STEPS: all or pairs" >&2; exit 2 ;; esac
all_steps() { [ "$STEPS" = all ]; }

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BENCH=$ROOT/bench
TOOLS=$BENCH/.tools
# SESAME_PROFILE=debug reuses the test build (CI smoke runs); measurements want release.
PROFILE=${SESAME_PROFILE:-release}
BIN=$ROOT/target/$PROFILE
REPORT=$BENCH/REPORT.md
[ "$MODE" = smoke ] && REPORT=$(mktemp /tmp/sesame-bench-smoke.XXXXXX.md)
all_steps || REPORT=$(mktemp /tmp/sesame-bench-pairs.XXXXXX.md)

die() { echo "run.sh: $*" >&2; exit 1; }
log() { echo "== $*" >&2; }
[ "$(id -u)" = 0 ] || die "run as root (namespaces, TUN devices)"

# ---- tools -----------------------------------------------------------------------------------
missing=()
for pkg in iperf3 wireguard-go wireguard-tools iproute2 iputils-ping python3; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  apt-get install -y "${missing[@]}" >/dev/null
fi
log "building sesame and the bench tools ($PROFILE)"
if [ "$PROFILE" = release ]; then
  (cd "$ROOT" && cargo build --release -q -p sesame -p sesame-agent -p sesame-bench)
else
  # The test build's feature set (workspace, dev-dependencies): after `cargo test --workspace`
  # (CI) every dependency is fresh and only the bench tools compile; `-p` builds would resolve
  # features apart and compile the dependencies again.
  (cd "$ROOT" && cargo build -q --workspace --bins --tests)
fi
if [ ! -x "$TOOLS/bin/boringtun-cli" ]; then
  log "installing boringtun-cli 0.7 into $TOOLS"
  cargo install -q boringtun-cli --version '^0.7' --root "$TOOLS"
fi
BTCLI=$TOOLS/bin/boringtun-cli

# ---- topology --------------------------------------------------------------------------------
# laptop ns (L) 198.18.0.2 ── veth ── 198.18.0.1 gateway ns (G) 198.18.2.1 ── veth ── 198.18.2.2 resource ns (R)
# R also drops 198.18.3.0/24 (blackhole): the sink of the forwarding test, counted at R's veth.
ID=$(( $$ % 100000 ))
NS_L=sbl$ID; NS_G=sbg$ID; NS_R=sbr$ID
VL=vl$ID; VGL=vgl$ID; VGR=vgr$ID; VR=vr$ID
WORK=$(mktemp -d /tmp/sesame-bench.XXXXXX)
PIDS=()

cleanup() {
  set +e
  # The agent's daemon (started by `sesame-agent up`, detached) is ours too.
  [ -f "$WORK/agent/agent.pid" ] && kill "$(cat "$WORK/agent/agent.pid")" 2>/dev/null
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
  for ns in $NS_L $NS_G $NS_R; do ip netns del "$ns" 2>/dev/null; done
  rm -f /var/run/wireguard/wg?"$ID".sock /var/run/wireguard/bt?"$ID".sock /var/run/wireguard/ss[vt]"$ID".sock
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

inl() { ip netns exec "$NS_L" "$@"; }
ing() { ip netns exec "$NS_G" "$@"; }
inr() { ip netns exec "$NS_R" "$@"; }
# bgin NS LOG CMD...: starts CMD in namespace NS (output to LOG); $! is CMD's own pid.
bgin() { local ns=$1 logf=$2; shift 2; ip netns exec "$ns" "$@" >"$logf" 2>&1 & PIDS+=($!); }
stop() { # stop PID: ends one process we started
  kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true
}

for ns in $NS_L $NS_G $NS_R; do
  ip netns add "$ns"
  ip netns exec "$ns" ip link set lo up
  ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1
  ip netns exec "$ns" sysctl -qw net.ipv6.conf.default.disable_ipv6=1
done
ip link add "$VL" netns "$NS_L" type veth peer name "$VGL" netns "$NS_G"
ip link add "$VGR" netns "$NS_G" type veth peer name "$VR" netns "$NS_R"
inl ip addr add 198.18.0.2/24 dev "$VL"; inl ip link set "$VL" up
ing ip addr add 198.18.0.1/24 dev "$VGL"; ing ip link set "$VGL" up
ing ip addr add 198.18.2.1/24 dev "$VGR"; ing ip link set "$VGR" up
inr ip addr add 198.18.2.2/24 dev "$VR"; inr ip link set "$VR" up
ing sysctl -qw net.ipv4.ip_forward=1
ing ip route add 198.18.3.0/24 via 198.18.2.2
inr ip route add 100.64.0.0/10 via 198.18.2.1
inr ip route add blackhole 198.18.3.0/24
# Handshake sources: 1,000 laptop-side addresses 198.18.4.1… (the gateway limits each source).
HS_SOURCES=1000
python3 -c "
import ipaddress
b = int(ipaddress.ip_address('198.18.4.1'))
for i in range($HS_SOURCES): print('addr add %s/32 dev $VL' % ipaddress.ip_address(b + i))
" | inl ip -batch -
inl ip route add 198.18.0.1/32 dev "$VL" 2>/dev/null || true
ing ip route add 198.18.4.0/22 via 198.18.0.2

# ---- keys ------------------------------------------------------------------------------------
# Gateway: a fresh wg key. Laptop: seed 2 index 0. Load generator peers: seed 1, index i.
(umask 077; wg genkey > "$WORK/gw.key")
GWPUB=$(wg pubkey < "$WORK/gw.key")
read -r _ LAPRIV LAPPUB _ < <("$BIN/loadgen" keys --seed 2 --count 1)
(umask 077; echo "$LAPRIV" > "$WORK/laptop.key")
MAXPEERS=1000
for n in $PEER_COUNTS $HS_PEERS; do [ "$n" -gt "$MAXPEERS" ] && MAXPEERS=$n; done

declare -A R   # results: R[key]=number

median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {if (NR==0) print "n/a"; else print a[int((NR+1)/2)]}'; }
result_of() { awk -v k="$1" '$1=="RESULT" && $2==k {print $3}' "$2" | tail -1; }

# iperf3 server in R for the whole run.
bgin "$NS_R" "$WORK/iperf3-server.log" iperf3 -s -B 198.18.2.2 -p 5201
sleep 0.5

# cpu_ticks PID...: user + system clock ticks used so far by these processes (all threads).
cpu_ticks() {
  local t=0 p u k
  for p in "$@"; do
    read -r u k < <(awk '{print $14, $15}' "/proc/$p/stat" 2>/dev/null || echo "0 0")
    t=$(( t + u + k ))
  done
  echo "$t"
}
CLK_TCK=$(getconf CLK_TCK)

# pair KEY [PID...]: runs iperf3 from L through whatever tunnel is up; stores R[KEY_p1], R[KEY_p4]
# (Gbit/s, median) and R[KEY_cpu_p1/p4] (CPU seconds of PIDs — both tunnel ends — per GB moved).
pair() {
  local key=$1 p i out vals t0 t1 ticks bytes gbps b
  shift
  if ! inl ping -q -c 1 -W 5 198.18.2.2 >/dev/null 2>&1; then
    inl ping -q -c 3 -W 2 198.18.2.2 >/dev/null 2>&1 || { log "$key: tunnel does not pass ping"; R[${key}_p1]=n/a; R[${key}_p4]=n/a; return; }
  fi
  for p in 1 4; do
    vals=(); ticks=0; bytes=0
    for i in $(seq "$REPS"); do
      t0=$(cpu_ticks "$@")
      out=$(inl timeout $((SECS + 20)) iperf3 -c 198.18.2.2 -p 5201 -t "$SECS" -P "$p" -J 2>/dev/null \
        | python3 -c 'import json,sys; r=json.load(sys.stdin)["end"]["sum_received"]; print("%.3f %d" % (r["bits_per_second"]/1e9, r["bytes"]))' 2>/dev/null) || out=""
      t1=$(cpu_ticks "$@")
      gbps=${out% *}; b=${out#* }
      if [ -n "$out" ]; then vals+=("$gbps"); ticks=$(( ticks + t1 - t0 )); bytes=$(( bytes + b )); fi
      log "$key $p stream(s) rep $i: ${gbps:-failed} Gbit/s"
    done
    R[${key}_p$p]=$(median "${vals[@]}")
    if [ $# -gt 0 ] && [ "$bytes" -gt 0 ]; then
      R[${key}_cpu_p$p]=$(awk -v t="$ticks" -v hz="$CLK_TCK" -v b="$bytes" 'BEGIN { printf "%.2f", (t / hz) / (b / 1e9) }')
    fi
  done
}

gw_rx() { # inner bytes the sesame gateway decrypted so far, all peers (its `wg show` API)
  ing wg show "sgw$ID" transfer 2>/dev/null | awk '{s += $2} END {print s + 0}'
}
udp_rcvbuf_errors() { # datagrams (GRO'd: whole receives) dropped by full UDP receive queues in G
  ing awk '/^Udp: [0-9]/ {print $6; exit}' /proc/net/snmp
}
gw_drops() { # the sesame gateway's cumulative drop counters (it logs them on SIGUSR1)
  kill -USR1 "$PG" 2>/dev/null || true; sleep 0.5
  grep -o 'drops: .*' "$WORK/sesame.log" | tail -1 | sed 's/^drops: //; s/\x1b\[[0-9;]*m//g'
}
wg_laptop_up() { # IFACE: configures the laptop side of a wg-uapi tunnel
  inl wg set "$1" private-key "$WORK/laptop.key" listen-port 51821 \
    peer "$GWPUB" endpoint 198.18.0.1:51820 allowed-ips 198.18.2.0/24,100.64.0.0/16
  inl ip addr add 100.64.0.2/32 dev "$1"; inl ip link set "$1" mtu 1420 up
  inl ip route add 198.18.2.0/24 dev "$1"
}
wg_gateway_up() { # IFACE
  ing wg set "$1" private-key "$WORK/gw.key" listen-port 51820 peer "$LAPPUB" allowed-ips 100.64.0.2/32
  ing ip addr add 100.64.0.1/16 dev "$1"; ing ip link set "$1" mtu 1420 up
}
wait_iface() { # NS IFACE
  for _ in $(seq 50); do ip netns exec "$1" ip link show "$2" >/dev/null 2>&1 && return 0; sleep 0.1; done
  die "interface $2 did not appear in $1"
}

# ---- raw boringtun limits (one core, in process) -----------------------------------------------
if all_steps; then
log "raw Tunn rates"
"$BIN/raw" --seconds "$RAW_SECS" | tee "$WORK/raw.out" >&2
for k in raw_encrypt_gbps raw_decrypt_gbps raw_decrypt_pps raw_decrypt_cpu_pps raw_handshake_per_s raw_handshake_anon_parse_per_s raw_initiation_per_s; do
  R[$k]=$(result_of $k "$WORK/raw.out")
done
fi

# ---- the same veth path, no tunnel (the limit) -------------------------------------------------
log "no tunnel"
inl ip route add 198.18.2.0/24 via 198.18.0.1
inr ip route add 198.18.0.0/24 via 198.18.2.1
pair notun
inl ip route del 198.18.2.0/24 via 198.18.0.1
inr ip route del 198.18.0.0/24 via 198.18.2.1

# ---- flow auditing on vs off (engine in process, same run) --------------------------------------
if all_steps; then
log "flow auditing cost"
case $MODE in
  full) FA_ARGS="--rounds 10 --pool 100000" ;; quick) FA_ARGS="--rounds 4 --pool 50000" ;; smoke) FA_ARGS="--rounds 2 --pool 5000" ;;
esac
for pct in 0 10; do
  # shellcheck disable=SC2086
  "$BIN/flowaudit" $FA_ARGS --peers 100 --denied-pct "$pct" | sed "s/^RESULT \([a-z_0-9]*\)/RESULT \1_d$pct/" | tee "$WORK/flowaudit_$pct.out" >&2 \
    || log "flowaudit with $pct % denied failed"
  for size in 1420 128; do
    for k in off_pps on_pps cost_pct; do
      R[fa_${size}_d${pct}_$k]=$(result_of "flow_audit_${size}_${k}_d$pct" "$WORK/flowaudit_$pct.out")
    done
  done
done
fi

# ---- wireguard-go ↔ wireguard-go ----------------------------------------------------------------
log "wireguard-go pair"
export WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD=1 LOG_LEVEL=error
bgin "$NS_G" "$WORK/wgg.log" wireguard-go -f "wgg$ID"; P1=$!
bgin "$NS_L" "$WORK/wgl.log" wireguard-go -f "wgl$ID"; P2=$!
wait_iface "$NS_G" "wgg$ID"; wait_iface "$NS_L" "wgl$ID"; sleep 0.3
wg_gateway_up "wgg$ID"; wg_laptop_up "wgl$ID"
pair wggo "$P1" "$P2"
stop "$P1"; stop "$P2"

# ---- boringtun-cli ↔ boringtun-cli (default threads, then --threads 1) -------------------------
for t in 4 1; do
  log "boringtun-cli pair, $t thread(s)"
  bgin "$NS_G" "$WORK/btg.log" "$BTCLI" -f --disable-drop-privileges -t "$t" "btg$ID"; P1=$!
  bgin "$NS_L" "$WORK/btl.log" "$BTCLI" -f --disable-drop-privileges -t "$t" "btl$ID"; P2=$!
  wait_iface "$NS_G" "btg$ID"; wait_iface "$NS_L" "btl$ID"; sleep 0.3
  wg_gateway_up "btg$ID"; wg_laptop_up "btl$ID"
  pair "bt$t" "$P1" "$P2"
  stop "$P1"; stop "$P2"
done

# ---- sesame gateway ↔ bench peer ---------------------------------------------------------------
log "sesame gateway"
{
  cat <<TOML
[gateway]
listen = "198.18.0.1:51820"
endpoint = "198.18.0.1:51820"
interface = "sgw$ID"
tunnel_network = "100.64.0.0/16"
private_key_file = "$WORK/gw.key"

[[resource]]
name = "bench"
description = "iperf3 server and the forwarding sink"
allow = ["198.18.2.0/24 any", "198.18.3.0/24 any"]

[[peer]]
name = "laptop"
public_key = "$LAPPUB"
address = "100.64.0.2"
resources = ["bench"]

TOML
  "$BIN/loadgen" toml --seed 1 --count "$MAXPEERS" --resource bench
} > "$WORK/sesame.toml"
SESAME_OK=1
bgin "$NS_G" "$WORK/sesame.log" "$BIN/sesame" gateway --config "$WORK/sesame.toml"; PG=$!
for _ in $(seq 50); do ing ip link show "sgw$ID" >/dev/null 2>&1 && break; sleep 0.1; done
if ! ing ip link show "sgw$ID" >/dev/null 2>&1; then
  log "sesame gateway did not start:"; cat "$WORK/sesame.log" >&2; SESAME_OK=0
  # A smoke run exists to catch exactly this: it fails (a measuring run goes on, columns n/a).
  [ "$MODE" = smoke ] && exit 1
fi
if [ $SESAME_OK = 1 ]; then
  # The laptop is sesame-agent itself, enrolled by hand (its files as `enrol` writes them;
  # the portal is a closed loopback port: the grant refresh fails, the tunnel does not care).
  log "sesame pair: sesame gateway + sesame-agent"
  AG=$WORK/agent; mkdir -m 700 "$AG"
  (umask 077
   printf '[Interface]\nPrivateKey = %s\nAddress = 100.64.0.2/32\nMTU = 1420\n\n[Peer]\nPublicKey = %s\nEndpoint = 198.18.0.1:51820\nAllowedIPs = 198.18.2.0/24\n' \
     "$LAPRIV" "$GWPUB" > "$AG/sesame.conf"
   printf 'portal = "http://127.0.0.1:9"\ndevice_id = 1\ndevice_token = "unused"\ninterface = "sag%s"\nrefresh_interval_secs = 3600\n' \
     "$ID" > "$AG/agent.toml")
  inl "$BIN/sesame-agent" up --dir "$AG" >&2 || log "sesame-agent up failed: $(cat "$AG/agent.log" 2>/dev/null)"
  PA=$(cat "$AG/agent.pid" 2>/dev/null || echo 0)
  grep -h 'offloads' "$AG/agent.log" >&2 || true
  pair sesame "$PG" "$PA"
  inl "$BIN/sesame-agent" down --dir "$AG" >&2 || true

  # Gateway-only forwarding: pre-encrypted datagrams from N peers, counted at R's veth.
  if all_steps; then
  for n in $PEER_COUNTS; do
    log "sesame forwarding, $n peer(s)"
    if [ "${PERF:-0}" = 1 ] && command -v perf >/dev/null; then
      # PERF=1 bench/run.sh: profile the gateway process while it forwards (report on stderr).
      # Starts once the load generator is sending (after its handshakes), bounded to 60 s.
      ( for _ in $(seq 600); do grep -q '^sending' "$WORK/fwd_$n.out" 2>/dev/null && break; sleep 0.1; done
        perf record -q -g -p "$PG" -o "$WORK/perf_$n.data" -- sleep "$SECS" >/dev/null 2>&1 ) & PERFPID=$!
    fi
    RX0=$(gw_rx); QD0=$(udp_rcvbuf_errors)
    inl "$BIN/loadgen" blast --gateway 198.18.0.1:51820 --gateway-public-key "$GWPUB" \
      --source-base 198.18.4.1 --sources "$HS_SOURCES" --seed 1 --peers "$n" --size 1420 --seconds "$SECS" \
      $(awk -v r="${R[raw_decrypt_pps]:-}" 'BEGIN { if (r + 0 > 0) printf "--pps %d", r }') \
      --dst 198.18.3.1:9 --count-ns "$NS_R" --count-iface "$VR" --tag "fwd_$n" --cpu-pid "$PG" \
      $([ "$MODE" = smoke ] && echo "--pool 20000") > "$WORK/fwd_$n.out" || log "forwarding with $n peers failed"
    cat "$WORK/fwd_$n.out" >&2
    R[fwd_${n}_decrypted]=$(awk -v a="$RX0" -v b="$(gw_rx)" 'BEGIN { printf "%d", (b - a) / 1420 }')
    R[fwd_${n}_qdrops]=$(( $(udp_rcvbuf_errors) - QD0 ))
    # Packets delivered per CPU second of the gateway (all threads, user + system), counted by
    # the load generator from its first data packet: the handshakes before are not forwarding.
    R[fwd_${n}_cpu_pps]=$(result_of "fwd_${n}_cpu_pps" "$WORK/fwd_$n.out")
    R[fwd_${n}_pps]=$(result_of "fwd_${n}_pps" "$WORK/fwd_$n.out")
    R[fwd_${n}_gbps]=$(result_of "fwd_${n}_gbps" "$WORK/fwd_$n.out")
    if [ -n "${PERFPID:-}" ]; then
      wait "$PERFPID" 2>/dev/null || true; PERFPID=
      perf report -i "$WORK/perf_$n.data" --stdio --no-children --percent-limit 1.5 2>/dev/null | grep -E '^ +[0-9]' >&2 || true
    fi
    R[fwd_${n}_drops]=$(gw_drops)
    R[fwd_${n}_loss]=$(awk '$2 ~ /_sent$/ {s=$3} $2 ~ /_delivered$/ {d=$3} END {if (s>0) printf "%.1f", 100*(s-d)/s}' "$WORK/fwd_$n.out")
    R[fwd_${n}_sent]=$(result_of "fwd_${n}_sent" "$WORK/fwd_$n.out")
    R[fwd_${n}_delivered]=$(result_of "fwd_${n}_delivered" "$WORK/fwd_$n.out")
  done

  log "sesame handshakes, $HS_PEERS peers from $HS_SOURCES source addresses"
  inl "$BIN/loadgen" handshake --gateway 198.18.0.1:51820 --gateway-public-key "$GWPUB" \
    --source-base 198.18.4.1 --sources "$HS_SOURCES" --seed 1 --peers "$HS_PEERS" --seconds "$SECS" > "$WORK/hs.out" || log "handshake test failed"
  cat "$WORK/hs.out" >&2
  R[hs_per_s]=$(result_of handshake_per_s "$WORK/hs.out")
  R[hs_cookie_per_s]=$(result_of handshake_cookie_per_s "$WORK/hs.out")
  R[hs_drops]=$(gw_drops)
  fi
  stop "$PG"

  # 10,000 enrolled peers: memory, and adding one while traffic flows.
  if all_steps; then
  log "sesame with $BIG peers"
  ing "$BIN/peers10k" --peers "$BIG" --laptop-ns "$NS_L" --resource-ns "$NS_R" \
    --listen 198.18.0.1:51830 --interface "sgk$ID" --loadgen "$BIN/loadgen" --sources "$HS_SOURCES" \
    --active $(( BIG / 10 )) --seconds $(( SECS < 3 ? 3 : SECS )) > "$WORK/big.out" || log "peers10k failed"
  cat "$WORK/big.out" >&2
  for k in idle_kib_per_peer active_kib_per_peer add_peer_ms add_peer_lost add_peer_sent; do
    R[$k]=$(result_of "$k" "$WORK/big.out")
  done
  fi
fi

# ---- sesame serve, then a site gateway fed by `sesame portal` ↔ sesame-agent (issue 18) -------
# The same laptop (sesame-agent, its files above), gateway key, endpoint and resource as the
# sesame gateway pair; the laptop enrolled in a SQLite store (pair_store) as a user granted the
# resource `bench`. `sesame serve`: its directory a closed loopback port (the sync fails and
# changes nothing), its portal on G's loopback. Then the same store behind `sesame portal` on G's
# loopback (the resource on site `bench`), feeding `sesame gateway --site bench` over HTTP with
# the site's token: the real processes, as on a portal host and a site's gateway host.
PV_VPN="cn=personnels,ou=groups,dc=academie,dc=test"
PV_GRP="cn=bench,ou=groups,dc=academie,dc=test"
# gw_serving IFACE: the gateway's peer table (its UAPI socket, stock `wg`) holds the laptop
gw_serving() {
  for _ in $(seq 200); do
    ing wg show "$1" peers 2>/dev/null | grep -qxF "$LAPPUB" && return 0; sleep 0.1
  done
  return 1
}
# pv_pair KEY PID IFACE LOG: the agent up, the pair through the gateway PID, the agent down
pv_pair() {
  inl "$BIN/sesame-agent" up --dir "$AG" >&2 || log "sesame-agent up failed: $(cat "$AG/agent.log" 2>/dev/null)"
  PA=$(cat "$AG/agent.pid" 2>/dev/null || echo 0)
  pair "$1" "$2" "$PA"
  if [ "${R[${1}_p1]}" = n/a ]; then
    ing wg show "$3" >&2 || true; tail -n 20 "$4" "$AG/agent.log" >&2 || true
  fi
  inl "$BIN/sesame-agent" down --dir "$AG" >&2 || true
  # The smoke run checks this pair carries traffic: no number fails it.
  if [ "$MODE" = smoke ] && [ "${R[${1}_p1]}" = n/a ]; then log "$1: no throughput"; exit 1; fi
}
if [ $SESAME_OK = 1 ]; then
  PV=$WORK/pv; mkdir -m 700 "$PV" "$PV/serve" "$PV/portal" "$PV/site"
  for d in serve site; do cp "$WORK/gw.key" "$PV/$d/gateway.key"; done
  (umask 077; echo unused > "$PV/ldap.password")
  PV_ADDR=$("$BIN/pair_store" --database "sqlite://$PV/sesame.db" --public-key "$LAPPUB" \
    --vpn-group "$PV_VPN" --group "$PV_GRP") || PV_ADDR=none
  [ "$PV_ADDR" = 100.64.0.2 ] || log "pair_store: the laptop enrolled at $PV_ADDR, its files say 100.64.0.2"
  pv_common() { # the database, the (unreachable) directory, the roles
    cat <<TOML
[database]
url = "sqlite://$PV/sesame.db"

[directory]
kind = "openldap"
url = "ldap://127.0.0.1:1"
bind_dn = "cn=sesame,ou=services,dc=academie,dc=test"
bind_password_file = "$PV/ldap.password"
user_base = "ou=people,dc=academie,dc=test"
user_filter = "(uid={username})"
group_base = "ou=groups,dc=academie,dc=test"
sync_interval = "3600s"
timeout = "2s"

[roles]
vpn_users = ["$PV_VPN"]

[[grant]]
group = "$PV_GRP"
resources = ["bench"]
TOML
  }
  { cat <<TOML
[portal]
listen = "127.0.0.1:8480"
public_url = "http://127.0.0.1:8480"

[gateway]
listen = "198.18.0.1:51820"
endpoint = "198.18.0.1:51820"
interface = "ssv$ID"
tunnel_network = "100.64.0.0/16"
private_key_file = "$PV/serve/gateway.key"

[[resource]]
name = "bench"
allow = ["198.18.2.0/24 any", "198.18.3.0/24 any"]

TOML
    pv_common; } > "$PV/serve.toml"
  { cat <<TOML
[portal]
listen = "127.0.0.1:8481"
public_url = "http://127.0.0.1:8481"

# Not read by the portal: its folder holds the portal's own state (audit key, checkpoints).
[gateway]
tunnel_network = "100.64.0.0/16"
private_key_file = "$PV/portal/gateway.key"

[metrics]
listen = "127.0.0.1:9481"

[[site]]
name = "bench"
endpoint = "198.18.0.1:51820"
public_key = "$GWPUB"

[[resource]]
name = "bench"
site = "bench"
allow = ["198.18.2.0/24 any", "198.18.3.0/24 any"]

TOML
    pv_common; } > "$PV/portal.toml"
  cat > "$PV/site.toml" <<TOML
[gateway]
listen = "198.18.0.1:51820"
endpoint = "198.18.0.1:51820"
interface = "sst$ID"
tunnel_network = "100.64.0.0/16"
private_key_file = "$PV/site/gateway.key"
portals = ["http://127.0.0.1:8481"]
portal_token_file = "$PV/site/site.token"

[metrics]
listen = "127.0.0.1:9482"
TOML

  log "sesame pair: sesame serve + sesame-agent"
  bgin "$NS_G" "$WORK/serve.log" "$BIN/sesame" serve --config "$PV/serve.toml"; PSV=$!
  if gw_serving "ssv$ID"; then
    pv_pair serve "$PSV" "ssv$ID" "$WORK/serve.log"
  else
    log "sesame serve is not serving the laptop:"; tail -n 20 "$WORK/serve.log" >&2
    [ "$MODE" = smoke ] && exit 1
  fi
  stop "$PSV"

  log "sesame pair: sesame gateway --site, fed by sesame portal, + sesame-agent"
  (umask 077; "$BIN/sesame" site token --config "$PV/portal.toml" --site bench > "$PV/site/site.token") \
    || log "sesame site token failed"
  bgin "$NS_G" "$WORK/portal.log" "$BIN/sesame" portal --config "$PV/portal.toml"; PPO=$!
  bgin "$NS_G" "$WORK/site.log" "$BIN/sesame" gateway --config "$PV/site.toml" --site bench; PST=$!
  if gw_serving "sst$ID"; then
    # The portal's CPU while the site gateway carries the pair (feed long-polls, event batches).
    T0=$(cpu_ticks "$PPO")
    pv_pair site "$PST" "sst$ID" "$WORK/site.log"
    R[site_portal_cpu]=$(awk -v t="$(( $(cpu_ticks "$PPO") - T0 ))" -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", t / hz }')
  else
    log "the site gateway is not serving the laptop:"; tail -n 20 "$WORK/site.log" "$WORK/portal.log" >&2
    [ "$MODE" = smoke ] && exit 1
  fi
  stop "$PST"; stop "$PPO"
fi

# ---- audit log insert rate (no network: a temp SQLite file, a throwaway PostgreSQL cluster) -----
if all_steps; then
log "audit insert rate ($AUDIT_EVENTS events, batches of $AUDIT_BATCH)"
"$BIN/audit_insert" --events "$AUDIT_EVENTS" --batch "$AUDIT_BATCH" > "$WORK/audit.out" || log "audit_insert failed"
cat "$WORK/audit.out" >&2
for b in sqlite postgres; do
  R[audit_${b}]=$(result_of "audit_insert_${b}_per_s" "$WORK/audit.out")
  R[audit_raw_${b}]=$(result_of "audit_raw_${b}_per_s" "$WORK/audit.out")
  R[audit_multi_${b}]=$(result_of "audit_raw_multirow_${b}_per_s" "$WORK/audit.out")
done

# ---- audit queries (no network: one SQLite file, removed with $WORK) ---------------------------
log "audit queries on a $AUDITQ_EVENTS-event log"
"$BIN/audit_query" --dir "$WORK/auditq" --events "$AUDITQ_EVENTS" --users "$AUDITQ_USERS" \
  --samples $([ "$MODE" = smoke ] && echo 10 || echo 200) --peer-samples 3 > "$WORK/auditq.out" || log "audit_query failed"
cat "$WORK/auditq.out" >&2
rm -rf "$WORK/auditq"
for k in events generate_s events_per_s db_mb query_p50_ms query_p99_ms query_rows peer_p50_ms peer_p99_ms \
         review_p50_ms review_p99_ms review_entries review_peer_p50_ms review_peer_p99_ms devices; do
  R[auditq_$k]=$(result_of "audit_$k" "$WORK/auditq.out")
done

# ---- site gateway cold start (issue 18): its own network namespace, an in-process portal -------
# `sesame gateway --site` started with no cache against a portal (SQLite, loopback HTTP) holding
# CS_DEVICES enrolled devices on its site; then `sesame serve` loading the same store.
fi
case $MODE in full|quick) CS_DEVICES=10000 ;; smoke) CS_DEVICES=100 ;; esac
if all_steps; then
log "site gateway cold start, $CS_DEVICES devices (and sesame serve, same store)"
if "$BIN/site_coldstart" --devices "$CS_DEVICES" --serve --sesame "$BIN/sesame" > "$WORK/coldstart.out"; then
  cat "$WORK/coldstart.out" >&2
else
  cat "$WORK/coldstart.out" >&2; log "site_coldstart failed"
  # The smoke run checks the site gateway starts and is fed: a failure fails it.
  [ "$MODE" = smoke ] && exit 1
fi
for w in site serve; do
  for k in up served cpu empty_served rss empty_rss kib_per_device wg_peers; do
    R[cs_${w}_$k]=$(result_of "coldstart_${w}_$k" "$WORK/coldstart.out")
  done
done
R[cs_enrol]=$(result_of coldstart_enrol "$WORK/coldstart.out")
R[cs_first_pass]=$(result_of coldstart_portal_first_pass "$WORK/coldstart.out")
fi

# ---- report ------------------------------------------------------------------------------------
v() { local x=${R[$1]:-}; echo "${x:-n/a}"; }
ratio() { # A B: A/B with 2 decimals, n/a when either is missing
  awk -v a="$1" -v b="$2" 'BEGIN { if (a+0 > 0 && b+0 > 0) printf "%.2f", a/b; else print "n/a" }'
}
max() { awk -v a="$1" -v b="$2" 'BEGIN { if (a+0 >= b+0) print a; else print b }'; }
best() { max "$(max "$(v wggo_p$1)" "$(v bt4_p$1)")" "$(v bt1_p$1)"; }

{
  echo "# Sesame benchmark report"
  echo
  echo "Run: $(date -u '+%Y-%m-%d %H:%M UTC'), mode $MODE ($REPS × ${SECS} s, median), $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), kernel $(uname -r)."
  echo "Commit: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown). Produced by \`bench/run.sh\`; all numbers are from this one run."
  echo "Load average at start: $LOAD_START; at end: $(cut -d' ' -f1-3 /proc/loadavg) (other work on the machine shares the 2 cores)."
  echo
  echo "## Pair throughput (iperf3 TCP laptop ns → gateway ns → resource ns, Gbit/s)"
  echo
  echo "| measurement | sesame gateway + sesame-agent | wireguard-go (Debian) | boringtun-cli 0.7 (4 thr) | boringtun-cli 0.7 (1 thr) | no tunnel (same veth path) | sesame / no tunnel (goal ≥ 0.17) | sesame / best other (goal ≥ 3) | sesame serve + sesame-agent | sesame gateway --site (fed by sesame portal) + sesame-agent | site / serve (goal ≈ 1.0) |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|"
  for p in 1 4; do
    echo "| $p stream(s), Gbit/s | $(v sesame_p$p) | $(v wggo_p$p) | $(v bt4_p$p) | $(v bt1_p$p) | $(v notun_p$p) | $(ratio "$(v sesame_p$p)" "$(v notun_p$p)") | $(ratio "$(v sesame_p$p)" "$(best $p)") | $(v serve_p$p) | $(v site_p$p) | $(ratio "$(v site_p$p)" "$(v serve_p$p)") |"
  done
  for p in 1 4; do
    echo "| $p stream(s), CPU s per GB (both ends) | $(v sesame_cpu_p$p) | $(v wggo_cpu_p$p) | $(v bt4_cpu_p$p) | $(v bt1_cpu_p$p) | (kernel only) | | | $(v serve_cpu_p$p) | $(v site_cpu_p$p) | $(ratio "$(v site_cpu_p$p)" "$(v serve_cpu_p$p)") |"
  done
  echo
  echo "\`sesame serve\` and the site gateway carry the pair with the same laptop, key, endpoint and resource (the laptop enrolled in a SQLite store); the site gateway is fed by a \`sesame portal\` process on the gateway ns's loopback, which used $(v site_portal_cpu) CPU s while the site pair ran (not counted in the CPU columns)."
  echo
  echo "## Gateway alone"
  echo
  echo "| measurement | sesame | limit (raw boringtun, one core, same run) | ratio |"
  echo "|---|---|---|---|"
  for n in $PEER_COUNTS; do
    echo "| forwarding, $n peer(s), 1420-byte packets: Gbit/s delivered to the resource ns (not delivered: $(v fwd_${n}_loss) % of those sent) | $(v fwd_${n}_gbps) | $(v raw_decrypt_gbps) (decrypt) | $(ratio "$(v fwd_${n}_gbps)" "$(v raw_decrypt_gbps)") |"
    echo "| forwarding, $n peer(s): packets/s | $(v fwd_${n}_pps) | $(v raw_decrypt_pps) | $(ratio "$(v fwd_${n}_pps)" "$(v raw_decrypt_pps)") |"
    echo "| forwarding, $n peer(s): packets per CPU second of the gateway (all threads) | $(v fwd_${n}_cpu_pps) | $(v raw_decrypt_cpu_pps) (decrypt per CPU second) | $(ratio "$(v fwd_${n}_cpu_pps)" "$(v raw_decrypt_cpu_pps)") |"
  done
  echo "| handshakes answered per second, $HS_PEERS peers from $HS_SOURCES source addresses (goal ≥ 0.75 of raw) | $(v hs_per_s) (+ $(v hs_cookie_per_s) cookie replies/s) | $(v raw_handshake_per_s) (Tunn responder; $(v raw_handshake_anon_parse_per_s) with anonymous parse) | $(ratio "$(v hs_per_s)" "$(v raw_handshake_per_s)") |"
  echo
  for n in $PEER_COUNTS; do
    echo "Forwarding with $n peer(s): $(v fwd_${n}_sent) packets sent, $(v fwd_${n}_decrypted) decrypted by the gateway, $(v fwd_${n}_delivered) delivered to the resource ns; $(v fwd_${n}_qdrops) receives dropped by full UDP receive queues in the gateway ns. Gateway drop counters (cumulative): $(v fwd_${n}_drops)."
    echo
  done
  echo "Gateway drop counters (cumulative) after the handshake test: $(v hs_drops). Raw boringtun initiator (what the load generator pays per initiation): $(v raw_initiation_per_s)/s."
  echo
  echo "## Flow auditing cost (engine in process, \`flowaudit\`; goal < 5 %)"
  echo
  echo "| packets | denied share | packets/s, auditing off | packets/s, auditing on | cost (%) |"
  echo "|---|---|---|---|---|"
  for pct in 0 10; do for size in 1420 128; do
    echo "| $size bytes, 100 peers | $pct % | $(v fa_${size}_d${pct}_off_pps) | $(v fa_${size}_d${pct}_on_pps) | $(v fa_${size}_d${pct}_cost_pct) |"
  done; done
  echo
  echo "## $BIG enrolled peers (in-process gateway, \`peers10k\`)"
  echo
  echo "| measurement | sesame | goal |"
  echo "|---|---|---|"
  echo "| RSS per idle peer (KiB) | $(v idle_kib_per_peer) | ≤ 2 |"
  echo "| RSS per active peer (KiB, session + traffic) | $(v active_kib_per_peer) | ≤ 16 |"
  echo "| time of \`set_peers\` adding one peer to $BIG while traffic flows (ms) | $(v add_peer_ms) | ≤ 1 |"
  echo "| packets of the others lost during that (of $(v add_peer_sent) sent) | $(v add_peer_lost) | 0 |"
  echo
  echo "Raw boringtun on one core, same run: encrypt $(v raw_encrypt_gbps) Gbit/s, decrypt $(v raw_decrypt_gbps) Gbit/s ($(v raw_decrypt_pps) packets/s), handshake responder $(v raw_handshake_per_s)/s."
  [ $SESAME_OK = 1 ] || echo "The sesame gateway did not start in this run: its columns are n/a."
  echo
  echo "## Audit log insert rate (\`audit_insert\`, events/s)"
  echo
  echo "| backend | sesame chain appends (goal ≥ 20000) | raw INSERTs of the same rows, one per statement | ratio | raw INSERTs, 100 rows per statement | ratio |"
  echo "|---|---|---|---|---|---|"
  for b in sqlite postgres; do
    echo "| $b | $(v audit_$b) | $(v audit_raw_$b) | $(ratio "$(v audit_$b)" "$(v audit_raw_$b)") | $(v audit_multi_$b) | $(ratio "$(v audit_$b)" "$(v audit_multi_$b)") |"
  done
  echo
  echo "## Audit queries ($(v auditq_events) events, SQLite, \`audit_query\`)"
  echo
  echo "| measurement | sesame p50 (ms) | sesame p99 (ms) | goal p99 | peer, same run: as asked before (user: no index columns; review: two log seeks per device, migration 0007 absent), p50 / p99 (ms) | ratio peer p50 / sesame p50 |"
  echo "|---|---|---|---|---|---|"
  echo "| one user, one month (first page, $(v auditq_query_rows) events on average) | $(v auditq_query_p50_ms) | $(v auditq_query_p99_ms) | < 100 | $(v auditq_peer_p50_ms) / $(v auditq_peer_p99_ms) | $(ratio "$(v auditq_peer_p50_ms)" "$(v auditq_query_p50_ms)") |"
  echo "| access review of one resource ($(v auditq_review_entries) devices) | $(v auditq_review_p50_ms) | $(v auditq_review_p99_ms) | < 100 | $(v auditq_review_peer_p50_ms) / $(v auditq_review_peer_p99_ms) | $(ratio "$(v auditq_review_peer_p50_ms)" "$(v auditq_review_p50_ms)") |"
  echo
  echo "The log ($(v auditq_devices) enrolled devices, 12 months, 85 % flow.allowed) was generated through the store's bulk path at $(v auditq_events_per_s) events/s ($(v auditq_db_mb) MB)."
  echo
  echo "## Site gateway cold start, $CS_DEVICES devices (\`site_coldstart\`)"
  echo
  echo "| measurement | \`sesame gateway --site\` fed by the portal | \`sesame serve\` from its store (same devices) | goal |"
  echo "|---|---|---|---|"
  echo "| time from process start to all $CS_DEVICES peers in the gateway's table (ms) | $(v cs_site_served) | $(v cs_serve_served) | < 3000 (site gateway) |"
  echo "| time from process start to its metrics answering (ms) | $(v cs_site_up) | $(v cs_serve_up) | |"
  echo "| CPU time of the process by then (ms, all threads) | $(v cs_site_cpu) | $(v cs_serve_cpu) | |"
  echo "| same, fed no device (ms) | $(v cs_site_empty_served) | $(v cs_serve_empty_served) | |"
  echo "| RSS serving $CS_DEVICES devices / none (MiB) | $(v cs_site_rss) / $(v cs_site_empty_rss) | $(v cs_serve_rss) / $(v cs_serve_empty_rss) | |"
  echo "| RSS per device (KiB) | $(v cs_site_kib_per_device) | $(v cs_serve_kib_per_device) | |"
  echo "| peers listed by \`wg show\` once served | $(v cs_site_wg_peers) | $(v cs_serve_wg_peers) | $CS_DEVICES |"
  echo
  echo "The devices were enrolled through the store in $(v cs_enrol) s (codes and enrolments, group-committed); the portal's first pass over them took $(v cs_first_pass) ms before the gateways started."
  echo
  echo "## How it is measured"
  echo
  echo "- Topology: laptop ns ── veth ── gateway ns ── veth ── resource ns (198.18.0.0/15 underlay, 100.64.0.0/10 tunnel), one TUN each side, MTU 1420. Every implementation runs on the same namespaces, one after the other."
  echo "- Pair: iperf3 client in the laptop ns, server in the resource ns; received bit rate, median of the repetitions. Sesame's laptop side is \`sesame-agent up\` (its daemon: the shared fast path, TUN and UDP offloads), the gateway \`sesame gateway\` with one worker per core. Then the same laptop through \`sesame serve\` (its store holds the laptop, enrolled and granted the resource; its directory a closed port) and through \`sesame gateway --site\` fed over loopback HTTP by a \`sesame portal\` process on the same store (issue 18: the feed must cost nothing on the packet path), one after the other on the same gateway key and endpoint. No tunnel: the same namespaces and veths, routed. CPU s per GB: user + system time of both tunnel processes (/proc/PID/stat) over the bytes iperf3 received, all repetitions; kernel work done in softirq outside those processes is not counted."
  echo "- Forwarding: \`loadgen blast\` handshakes N peers with the gateway (one source address each), pre-encrypts 1420-byte UDP packets (IP ids in sequence, UDP checksums, as a Linux sender), sends them with UDP GSO (runs of 256 per peer, up to 45 datagrams per sendmmsg entry, as an offloading peer such as a recent wireguard-go), offered at the raw one-core decrypt rate of this run, bounded by the pool (at most 600,000 packets) and time; packets counted at the resource ns veth (dropped there by a blackhole route; the gateway's USO writes stay whole across the veth, so packets = (bytes − frames × 42) / 1392). Decrypted: the gateway's own per-peer counters (\`wg show transfer\`). Rate = delivered / time until the counter stops moving. Per CPU second: delivered over the gateway process's user + system time from the load generator's first data packet until the counter stops moving (the N handshakes before are not counted; its syscalls' kernel work is; the UDP receive work the kernel does in the sender's context is not), against what one thread decrypts per CPU second in \`raw\` (both independent of how busy the machine is). The load generator shares the 2 cores (and the veth receive work runs in its context)."
  echo "- Handshakes: \`loadgen handshake\` first has each of the $HS_PEERS peers (on $HS_SOURCES source addresses: the gateway limits each source to 20/s) collect a cookie, then builds its initiations (with MAC2) before the clock starts, then sends them with at most 256 in flight and counts responses per second; so the client's crypto is outside the timed part (but the client still shares the 2 cores). The raw limit is boringtun's \`Tunn\` answering pre-built initiations on one core."
  echo "- Flow auditing: \`flowaudit\` drives two engines in process (one with flow and session records on, one off) with the same pre-encrypted packets from 100 boringtun laptops, alternating rounds, and reports the median packets/s of each (rounds timed in thread CPU time: time descheduled on a busy machine is not counted); a window flush ends every round (records drained by a consumer thread). No socket or TUN I/O, which costs the same in both modes: the cost in end-to-end forwarding is smaller than this."
  echo "- Audit inserts: \`audit_insert\` appends $AUDIT_EVENTS flow.allowed-sized events with \`Store::append_audit_batch\` in batches of $AUDIT_BATCH (as the audit writer does: one writer transaction per batch, chained and hashed), on a fresh SQLite file (WAL, synchronous=FULL) and on a throwaway PostgreSQL cluster (fsync off, as the tests run it); then the same rows as plain INSERTs into a trigger-free table of the same shape (one row per statement, then 100 rows per statement), one transaction per batch: the database's own limits in the same run. The chain is verified after the run."
  echo "- $BIG peers: \`peers10k\` runs the gateway library in process: RSS with 0 then $BIG peers (idle), then after $(( BIG / 10 )) of them handshake and send (active); then times \`set_peers\` with $BIG + 1 peers while $(( BIG / 10 )) peers send 20,000 packets/s to a UDP sink that marks sequence numbers; losses within 100 ms of the call are reported."
  echo "- Site gateway cold start: \`site_coldstart\` creates its own network namespace, enrols $CS_DEVICES devices (one site) in a SQLite store on tmpfs, runs the portal in process (its feed route over loopback HTTP, first pass done), writes a site token, then starts the real \`sesame gateway --site\` binary with no cache and reads its metrics every 20 ms: served = \`sesame_gateway_peers\` (the peer table) equals $CS_DEVICES after a feed answer. RSS (/proc/PID/status) 1.5 s after serving, minus the same gateway's RSS fed an empty site, over $CS_DEVICES. Then \`sesame serve\` (its directory a closed port) on the same store, and on an empty one for the baseline. The in-process portal shares the 2 cores with the gateway being measured."
} > "$REPORT"
if all_steps; then cat "$REPORT"; else sed '/^## Gateway alone/,$d' "$REPORT"; fi
{ [ "$MODE" = smoke ] || ! all_steps; } && rm -f "$REPORT"
exit 0
