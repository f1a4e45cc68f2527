#!/usr/bin/env bash
# Side-by-side performance comparison (SPEC section 10), on this machine, in
# one run, against the Debian vmagent and Pushgateway:
#   1. Remote-Write relay: Sluice vs vmagent, same load into a counting sink.
#   2. Pushes (1,000 groups, ~25 lines): Sluice (wal.fsync always and
#      interval) vs the Pushgateway; max rate and p99 at half of Sluice's max
#      (with, for information, how busy the CPUs were and Sluice's own p99 from
#      sluice_push_duration_seconds); Sluice with protobuf bodies (client_golang
#      push's default) for information.
#   3. Memory and restart: 1M live series (every window forwarded to a
#      counting sink), bytes per series, kill -9, time
#      until /-/ready.
# Prints a table and PASS/FAIL lines. Exits non-zero only when the tooling
# fails (a build, a process that does not start, the generator erroring),
# never on a missed target.
#
# Environment (defaults in brackets):
#   COMPARE_SECONDS [15]           length of each measured run
#   COMPARE_SKIP_RW, COMPARE_SKIP_PUSH, COMPARE_SKIP_SERIES [0]  skip a part
#   COMPARE_RW_CONCURRENCY [8], COMPARE_RW_SERIES [500] (per request),
#   COMPARE_RW_TOTAL_SERIES [100000]
#   COMPARE_RW_ROUNDS [2]          relay rounds; each runs every side once, in
#                                  reverse order every other round (ABC CBA),
#                                  so a machine whose speed drifts during the
#                                  run favours no side; figures sum the rounds
#   COMPARE_PUSH_CONCURRENCY [64], COMPARE_PUSH_GROUPS [1000], COMPARE_PUSH_SERIES [25]
#   COMPARE_PUSH_ROUNDS [2]        rounds of Sluice's two maximum-rate push runs
#                                  (fsync always, interval), in reverse order
#                                  every other round, each with a fresh process;
#                                  rates are the mean over the rounds
#   COMPARE_SERIES_GROUPS [1000], COMPARE_SERIES_PER_GROUP [1000]
#   COMPARE_PIN [1]                pin the generator and the sink to the last CPU
#   COMPARE_DRAIN_TIMEOUT [60]     seconds to wait for a relay to deliver everything
#   COMPARE_DIR [$TMPDIR or /tmp]  where WALs live (use a real disk, not tmpfs:
#                                  fsync on tmpfs is free)
#   COMPARE_WARMUP_SECONDS [20]    cap on the one-push-per-group warm-up before push runs
#   COMPARE_KEEP [0]               keep the work directory (logs, JSON results)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

SECS=${COMPARE_SECONDS:-15}
SKIP_RW=${COMPARE_SKIP_RW:-0}
SKIP_PUSH=${COMPARE_SKIP_PUSH:-0}
SKIP_SERIES=${COMPARE_SKIP_SERIES:-0}
RW_CONC=${COMPARE_RW_CONCURRENCY:-8}
RW_SERIES=${COMPARE_RW_SERIES:-500}
RW_TOTAL=${COMPARE_RW_TOTAL_SERIES:-100000}
RW_ROUNDS=${COMPARE_RW_ROUNDS:-2}
PUSH_CONC=${COMPARE_PUSH_CONCURRENCY:-64}
PUSH_GROUPS=${COMPARE_PUSH_GROUPS:-1000}
PUSH_SERIES=${COMPARE_PUSH_SERIES:-25}
PUSH_ROUNDS=${COMPARE_PUSH_ROUNDS:-2}
MEM_GROUPS=${COMPARE_SERIES_GROUPS:-1000}
MEM_SERIES=${COMPARE_SERIES_PER_GROUP:-1000}
PIN=${COMPARE_PIN:-1}
DRAIN_TIMEOUT=${COMPARE_DRAIN_TIMEOUT:-60}
KEEP=${COMPARE_KEEP:-0}
WARMUP_MAX=${COMPARE_WARMUP_SECONDS:-20}

# SPEC 10 targets.
PUSH_TARGET=28000      # 10x the zapier aggregation gateway's 2,800 pushes/s
P99_TARGET_MS=5
GROUP_COMMIT_MAX=25    # percent of throughput
BYTES_PER_SERIES_MAX=1024
RESTART_MAX_S=10

log() { printf '== %s\n' "$*" >&2; }
die() { printf 'compare: %s\n' "$*" >&2; exit 1; }

WORK=$(mktemp -d "${COMPARE_DIR:-${TMPDIR:-/tmp}}/sluice-compare.XXXXXX")
PIDS=()

# stop_pid ends one process this script started: SIGTERM, then SIGKILL
# after 10 s.
stop_pid() {
	local pid=$1 i
	kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; forget_pid "$pid"; return 0; }
	kill -TERM "$pid" 2>/dev/null || true
	for i in $(seq 100); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
	forget_pid "$pid"
}

# forget_pid PID: takes a stopped process off PIDS, so that cleanup never
# signals its number again (by then another process may have it).
forget_pid() {
	local keep=() p
	for p in "${PIDS[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
	PIDS=("${keep[@]}")
}

cleanup() {
	local pid
	for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
	if [ "$KEEP" = 1 ]; then
		echo "work directory kept: $WORK" >&2
	else
		rm -rf "$WORK"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start_bg NAME CMD... starts CMD in the background with its output in
# $WORK/NAME.log and sets LAST_PID (not a command substitution: the
# process must be this shell's child so that it can be waited for).
LAST_PID=
start_bg() {
	local name=$1
	shift
	"$@" >"$WORK/$name.log" 2>&1 &
	LAST_PID=$!
	PIDS+=("$LAST_PID")
}

NCPU=$(nproc)
GEN_CPU=$((NCPU - 1))
PIN_PREFIX=()
if [ "$PIN" = 1 ] && [ "$NCPU" -gt 1 ] && command -v taskset >/dev/null; then
	PIN_PREFIX=(taskset -c "$GEN_CPU")
fi
# gen CMD... runs a generator command, pinned to the last CPU when asked.
gen() { "${PIN_PREFIX[@]}" "$@"; }

CLK_TCK=$(getconf CLK_TCK)
# cpu_ticks PID: user+system CPU of the process so far, in clock ticks.
cpu_ticks() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; }
# status_kb PID FIELD: a field of /proc/PID/status in kB (VmHWM, VmRSS).
status_kb() { awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"; }
# jget FILE KEY: a top-level scalar of the one-line JSON in FILE.
jget() { sed -n "s/.*\"$2\":\([^,}]*\).*/\1/p" "$1" | tr -d '"' | head -n1; }
# jstatuses FILE: the "statuses" object of a generator result, as 200:n 503:m.
jstatuses() { sed -n 's/.*"statuses":{\([^}]*\)}.*/\1/p' "$1" | tr -d '"' | tr ',' ' '; }
# gc_count LOG: how many GODEBUG=gctrace lines LOG holds.
gc_count() { grep -c '^gc [0-9]' "$1" || true; }
# calc EXPR [DECIMALS]: floating-point arithmetic.
calc() { awk "BEGIN { printf \"%.${2:-2}f\", $1 }"; }
# ge A B: A >= B for floats.
ge() { awk "BEGIN { exit !($1 >= $2) }"; }

RESULTS=()   # table rows
VERDICTS=()  # PASS/FAIL lines
verdict() {  # verdict OK(0/1) TEXT
	if [ "$1" = 1 ]; then VERDICTS+=("PASS  $2"); else VERDICTS+=("FAIL  $2"); fi
}

# --- dependencies --------------------------------------------------------

VMAGENT=${VMAGENT:-$(command -v vmagent || echo /usr/bin/vmagent)}
PUSHGATEWAY=${PUSHGATEWAY:-$(command -v prometheus-pushgateway || echo /usr/bin/prometheus-pushgateway)}
missing=()
[ "$SKIP_RW" = 1 ] || [ -x "$VMAGENT" ] || missing+=(victoria-metrics)
[ "$SKIP_PUSH" = 1 ] || [ -x "$PUSHGATEWAY" ] || missing+=(prometheus-pushgateway)
if [ "${#missing[@]}" -gt 0 ]; then
	if [ "$(id -u)" = 0 ]; then
		log "installing ${missing[*]}"
		# The packages' services must not start: on a host with systemd
		# they would listen on every interface (:8428, :9091) for good.
		# A policy-rc.d that refuses every start is honoured by
		# invoke-rc.d and deb-systemd-invoke; it is removed again unless
		# it was there before.
		policy=/usr/sbin/policy-rc.d
		own_policy=0
		if [ ! -e "$policy" ]; then
			printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && own_policy=1
		fi
		apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
			log "could not install ${missing[*]}; those comparisons are skipped"
		[ "$own_policy" = 0 ] || rm -f "$policy"
	else
		log "not root: cannot install ${missing[*]}; those comparisons are skipped"
	fi
fi

log "building bin/sluice and bin/loadtest"
mkdir -p bin
CGO_ENABLED=0 go build -o bin/sluice ./cmd/proxy || die "build ./cmd/proxy failed"
go build -o bin/loadtest ./loadtest || die "build ./loadtest failed"
SLUICE=$ROOT/bin/sluice
LT=$ROOT/bin/loadtest

port() { "$LT" freeport; }
wait_ready() { # URL [TIMEOUT]
	"$LT" wait -url "$1" -timeout "${2:-60s}" >/dev/null || die "$1 did not become ready (logs in $WORK)"
}
check_alive() { # PID NAME
	kill -0 "$1" 2>/dev/null || { KEEP=1; die "$2 exited; see $WORK/$2.log"; }
}

if [ "${#PIN_PREFIX[@]}" -gt 0 ]; then
	PIN_NOTE="generator and sink pinned to CPU $GEN_CPU of $NCPU; the proxy is not pinned and shares that CPU with them"
else
	PIN_NOTE="nothing pinned: generator, sink and proxy share all $NCPU CPUs"
fi
log "$PIN_NOTE"

# --- 1. Remote-Write relay ------------------------------------------------

SINK_PID=
SINK_URL=
start_sink() {
	local p
	p=$(port)
	start_bg sink "${PIN_PREFIX[@]}" "$LT" sink -listen "127.0.0.1:$p" -prefix loadtest_rw_ -print-interval 0
	SINK_PID=$LAST_PID
	SINK_URL=http://127.0.0.1:$p
	wait_ready "$SINK_URL/-/ready" 10s
}

# wait_drain SENT: wait until the sink has SENT matching samples, or nothing
# arrived for 10 s, or DRAIN_TIMEOUT; prints the samples received.
wait_drain() {
	local sent=$1 got=0 last=-1 still=0 waited=0
	while :; do
		got=$("$LT" fetch -url "$SINK_URL/count" | sed -n 's/.*"matched_samples":\([0-9]*\).*/\1/p')
		[ "$got" -ge "$sent" ] && break
		if [ "$got" = "$last" ]; then still=$((still + 1)); else still=0; fi
		last=$got
		[ "$still" -ge 20 ] && break
		[ "$waited" -ge $((DRAIN_TIMEOUT * 2)) ] && break
		sleep 0.5
		waited=$((waited + 1))
	done
	echo "$got"
}

# rw_measure NAME PID WRITE_URL: one relay run, added to RW_*[NAME]: CPU
# ticks, samples sent and received and the run's seconds are summed over
# the rounds, the peak RSS and the p99 are the highest of them.
declare -A RW_TICKS RW_SECS RW_HWM RW_P99 RW_SENT RW_RECV RW_STAT RW_RUNS
rw_measure() {
	local name=$1 pid=$2 url=$3 t0 t1 sent recv hwm p99 cpum=inf out=$WORK/rw-$1-$ROUND.json
	"$LT" fetch -method POST -url "$SINK_URL/reset" >/dev/null
	t0=$(cpu_ticks "$pid")
	log "remote-write -> $name for ${SECS}s (round $ROUND of $RW_ROUNDS; $RW_CONC clients, $RW_SERIES series/request, $RW_TOTAL distinct series)"
	gen "$LT" remote-write -url "$url" -duration "${SECS}s" -concurrency "$RW_CONC" \
		-series "$RW_SERIES" -total-series "$RW_TOTAL" -json >"$out" || die "remote-write generator failed against $name"
	sent=$(jget "$out" samples)
	recv=$(wait_drain "$sent")
	t1=$(cpu_ticks "$pid")
	check_alive "$pid" "$name"
	hwm=$(status_kb "$pid" VmHWM)
	p99=$(calc "$(jget "$out" latency_p99_ms)" 2)
	[ "$sent" -gt 0 ] && cpum=$(calc "($t1 - $t0) / $CLK_TCK / ($sent / 1e6)" 3)
	RW_TICKS[$name]=$(( ${RW_TICKS[$name]:-0} + t1 - t0 ))
	RW_SENT[$name]=$(( ${RW_SENT[$name]:-0} + sent ))
	RW_RECV[$name]=$(( ${RW_RECV[$name]:-0} + recv ))
	RW_SECS[$name]=$(calc "${RW_SECS[$name]:-0} + $(jget "$out" elapsed_seconds)" 3)
	RW_HWM[$name]=$(( hwm > ${RW_HWM[$name]:-0} ? hwm : ${RW_HWM[$name]:-0} ))
	ge "${RW_P99[$name]:-0}" "$p99" || RW_P99[$name]=$p99
	RW_STAT[$name]="${RW_STAT[$name]:+${RW_STAT[$name]}; }$(jstatuses "$out")"
	RW_RUNS[$name]="${RW_RUNS[$name]:+${RW_RUNS[$name]}, }$cpum"
	log "$name: $(calc "$(jget "$out" samples_per_second)" 0) samples/s accepted, $cpum CPU s per M samples, sink got $recv of $sent"
}

# rw_side NAME: start NAME's relay (sluice, sluice(fsync=interval) or
# vmagent), measure it, stop it.
rw_side() {
	local name=$1 fs p pid
	# Nothing dirty left in the page cache by the build or the run before:
	# on ext4 the first fsync would also write it out.
	sync
	case $name in
	vmagent)
		p=$(port)
		start_bg vmagent "$VMAGENT" -httpListenAddr="127.0.0.1:$p" -remoteWrite.url="$SINK_URL/api/v1/write" \
			-remoteWrite.tmpDataPath="$WORK/vmagent-data-$ROUND" -loggerLevel=WARN
		pid=$LAST_PID
		wait_ready "http://127.0.0.1:$p/health"
		rw_measure vmagent "$pid" "http://127.0.0.1:$p/api/v1/write"
		;;
	*)
		# Sluice relays every series without clear_mode unchanged; its own
		# metrics are not forwarded, so the sink sees only the generator's.
		fs=always
		[ "$name" = sluice ] || fs=interval
		cat >"$WORK/sluice-rw-$fs.yml" <<-EOF
			self_metrics:
			  forward: false
			wal:
			  fsync: $fs
		EOF
		p=$(port)
		start_bg "sluice-rw-$fs-$ROUND" "$SLUICE" --web.listen-address="127.0.0.1:$p" --wal.dir="$WORK/rw-wal-$fs-$ROUND" \
			--config.file="$WORK/sluice-rw-$fs.yml" --remote-write.url="$SINK_URL/api/v1/write" --log.level=warn
		pid=$LAST_PID
		wait_ready "http://127.0.0.1:$p/-/ready"
		rw_measure "$name" "$pid" "http://127.0.0.1:$p/api/v1/write"
		;;
	esac
	stop_pid "$pid"
}

declare -A RW_SPS RW_CPUM
if [ "$SKIP_RW" != 1 ]; then
	start_sink
	# The default (fsync: always, the target), then fsync: interval for
	# what the fsync before each acknowledgement costs (information), then
	# vmagent; every other round in reverse order.
	sides=(sluice "sluice(fsync=interval)")
	[ -x "$VMAGENT" ] && sides+=(vmagent)
	# Warm-up, measured for no side: the same load straight into the sink
	# for a few seconds. The first measured run right after the build came
	# out 15-35% dearer than the same side's second round in two of four
	# runs, whichever side it was.
	log "warm-up: remote-write straight into the sink for 5s"
	gen "$LT" remote-write -url "$SINK_URL/api/v1/write" -duration 5s -concurrency "$RW_CONC" \
		-series "$RW_SERIES" -total-series "$RW_TOTAL" -json >"$WORK/rw-warmup.json" || die "remote-write warm-up failed"
	reversed=()
	for ((i = ${#sides[@]} - 1; i >= 0; i--)); do reversed+=("${sides[$i]}"); done
	for ((ROUND = 1; ROUND <= RW_ROUNDS; ROUND++)); do
		order=("${sides[@]}")
		((ROUND % 2)) || order=("${reversed[@]}")
		for n in "${order[@]}"; do
			rw_side "$n"
		done
	done
	stop_pid "$SINK_PID"
	for n in "${sides[@]}"; do
		RW_SPS[$n]=$(calc "${RW_SENT[$n]} / ${RW_SECS[$n]}" 0)
		if [ "${RW_SENT[$n]}" -gt 0 ]; then
			RW_CPUM[$n]=$(calc "${RW_TICKS[$n]} / $CLK_TCK / (${RW_SENT[$n]} / 1e6)" 3)
		else
			RW_CPUM[$n]=inf
		fi
	done

	for n in sluice "sluice(fsync=interval)" vmagent; do
		[ -n "${RW_SENT[$n]:-}" ] || continue
		RESULTS+=("$(printf '%-28s %14s %12s %10s %10s   %s' "relay: $n" "$(calc "${RW_SPS[$n]}" 0)" "${RW_CPUM[$n]}" \
			"$(calc "${RW_HWM[$n]} / 1024" 0)" "${RW_P99[$n]}" "CPU s/M by round: ${RW_RUNS[$n]}; sink got ${RW_RECV[$n]} of ${RW_SENT[$n]} sent; ${RW_STAT[$n]}")")
		verdict "$([ "${RW_RECV[$n]}" -ge "${RW_SENT[$n]}" ] && echo 1 || echo 0)" \
			"relay $n: every accepted sample reached the sink (${RW_RECV[$n]} of ${RW_SENT[$n]})"
	done
	if [ -n "${RW_SENT[vmagent]:-}" ]; then
		if [ "${RW_SENT[sluice]}" -gt 0 ] && [ "${RW_SENT[vmagent]}" -gt 0 ]; then
			verdict "$(ge "${RW_CPUM[vmagent]}" "${RW_CPUM[sluice]}" && echo 1 || echo 0)" \
				"relay CPU per M samples: Sluice ${RW_CPUM[sluice]} s <= vmagent ${RW_CPUM[vmagent]} s (ratio $(calc "${RW_CPUM[sluice]} / ${RW_CPUM[vmagent]}"))"
			VERDICTS+=("INFO  relay, Sluice / vmagent: samples/s $(calc "${RW_SPS[sluice]} / ${RW_SPS[vmagent]}")x, peak RSS $(calc "${RW_HWM[sluice]} / ${RW_HWM[vmagent]}")x, p99 $(calc "${RW_P99[sluice]} / ${RW_P99[vmagent]}")x")
		else
			verdict 0 "relay CPU per M samples: no samples accepted (Sluice ${RW_SENT[sluice]}, vmagent ${RW_SENT[vmagent]}); see the statuses above"
		fi
		[ "${RW_SENT[sluice(fsync=interval)]:-0}" -gt 0 ] && [ "${RW_SENT[vmagent]}" -gt 0 ] &&
			VERDICTS+=("INFO  relay CPU per M samples with wal.fsync: interval (no fsync before the 2xx, as vmagent): Sluice ${RW_CPUM[sluice(fsync=interval)]} s, ratio $(calc "${RW_CPUM[sluice(fsync=interval)]} / ${RW_CPUM[vmagent]}")")
	else
		VERDICTS+=("SKIP  relay CPU per M samples: no vmagent")
	fi
fi

# --- 2. Pushes ------------------------------------------------------------

declare -A PU_RPS PU_SPS PU_CPUM PU_HWM PU_P99 PU_SP99 PU_LATE PU_STAT PU_N PU_TICKS PU_SAMPLES PU_RUNS
# push_measure NAME PID BASE_URL [RATE [FORMAT]]: one push run (text bodies
# unless FORMAT is protobuf), added to PU_*[NAME]:
# over several runs of one NAME, rates are the mean, CPU per sample the
# total over the total, p99 and peak RSS the highest, and PU_RUNS lists
# each run's rate.
push_measure() {
	local name=$1 pid=$2 url=$3 rate=${4:-0} format=${5:-text} t0 t1 out samples rps p99 hwm
	PU_N[$name]=$((${PU_N[$name]:-0} + 1))
	out=$WORK/push-$1-${PU_N[$name]}.json
	sync # as in rw_side
	t0=$(cpu_ticks "$pid")
	log "push -> $name for ${SECS}s ($PUSH_CONC clients, $PUSH_GROUPS groups, $PUSH_SERIES lines, $format, rate ${rate/#0/max})"
	gen "$LT" push -url "$url" -duration "${SECS}s" -concurrency "$PUSH_CONC" -rate "$rate" -format "$format" \
		-groups "$PUSH_GROUPS" -series "$PUSH_SERIES" -json >"$out" || die "push generator failed against $name"
	t1=$(cpu_ticks "$pid")
	check_alive "$pid" "$name"
	samples=$(jget "$out" samples)
	rps=$(jget "$out" requests_per_second)
	p99=$(calc "$(jget "$out" latency_p99_ms)" 2)
	hwm=$(status_kb "$pid" VmHWM)
	if [ "$rate" != 0 ]; then
		PU_SP99[$name]=$(calc "$(jget "$out" latency_from_schedule_p99_ms)" 2)
		PU_LATE[$name]=$(jget "$out" late_requests)
	fi
	PU_TICKS[$name]=$((${PU_TICKS[$name]:-0} + t1 - t0))
	PU_SAMPLES[$name]=$((${PU_SAMPLES[$name]:-0} + samples))
	# Running means over the runs so far.
	PU_RPS[$name]=$(calc "(${PU_RPS[$name]:-0} * (${PU_N[$name]} - 1) + $rps) / ${PU_N[$name]}" 3)
	PU_SPS[$name]=$(calc "(${PU_SPS[$name]:-0} * (${PU_N[$name]} - 1) + $(jget "$out" samples_per_second)) / ${PU_N[$name]}" 3)
	if [ -z "${PU_P99[$name]:-}" ] || ge "$p99" "${PU_P99[$name]}"; then PU_P99[$name]=$p99; fi
	if [ -z "${PU_HWM[$name]:-}" ] || [ "$hwm" -gt "${PU_HWM[$name]}" ]; then PU_HWM[$name]=$hwm; fi
	PU_STAT[$name]="${PU_STAT[$name]:+${PU_STAT[$name]}; }$(jstatuses "$out")"
	PU_RUNS[$name]="${PU_RUNS[$name]:+${PU_RUNS[$name]}, }$(calc "$rps" 0)"
	if [ "${PU_SAMPLES[$name]}" -gt 0 ]; then
		PU_CPUM[$name]=$(calc "${PU_TICKS[$name]} / $CLK_TCK / (${PU_SAMPLES[$name]} / 1e6)" 3)
	else
		PU_CPUM[$name]=inf
	fi
	log "$name: $(calc "$rps" 0) pushes/s, p99 $p99 ms ($(jstatuses "$out"))"
}

# warm_up NAME URL: one push to every group, so that the measured run sees
# them all; capped at WARMUP_MAX seconds (a Pushgateway holding 1,000 groups
# takes a few pushes per second here). Sets PU_GROUPS[NAME].
declare -A PU_GROUPS
warm_up() {
	gen "$LT" push -url "$2" -requests "$PUSH_GROUPS" -duration "${WARMUP_MAX}s" -concurrency 8 \
		-groups "$PUSH_GROUPS" -series "$PUSH_SERIES" -json >"$WORK/warmup-$1.json" || die "warm-up push failed against $1"
	PU_GROUPS[$1]=$(jget "$WORK/warmup-$1.json" ok)
	[ "${PU_GROUPS[$1]}" -ge "$PUSH_GROUPS" ] || log "$1: warm-up reached only ${PU_GROUPS[$1]} of $PUSH_GROUPS groups in ${WARMUP_MAX}s"
}

# fsync_ms URL: Sluice's mean WAL fsync latency so far, in ms.
fsync_ms() {
	"$LT" fetch -url "$1/metrics" -sum sluice_wal_fsync_duration_seconds_sum -sum sluice_wal_fsync_duration_seconds_count |
		awk '{ v[NR] = $2 } END { if (v[2] > 0) printf "%.2f", 1000 * v[1] / v[2]; else print "n/a" }'
}

# push_buckets URL: the cumulative buckets of Sluice's own push latency
# (sluice_push_duration_seconds: from the handler's start to the answer,
# WAL wait included), "le count" per line.
push_buckets() { "$LT" fetch -url "$1/metrics" -buckets sluice_push_duration_seconds; }

# bucket_quantile Q BEFORE AFTER: the Q-quantile in ms of the observations
# between two push_buckets snapshots, interpolated within its bucket as
# PromQL's histogram_quantile does.
bucket_quantile() {
	awk -v q="$1" 'BEGIN { n = 0 } NR == FNR { b[$1] = $2; next }
		{ le[n] = $1; c[n] = $2 - b[$1]; n++ }
		END {
			if (n == 0 || c[n - 1] <= 0) { print "n/a"; exit }
			rank = q * c[n - 1]
			for (i = 0; i < n; i++) if (c[i] >= rank) break
			if (le[i] == "+Inf") { printf "> %.2f", 1000 * le[i - 1]; exit }
			lo = i > 0 ? le[i - 1] : 0; below = i > 0 ? c[i - 1] : 0
			printf "%.2f", 1000 * (lo + (le[i] - lo) * (rank - below) / (c[i] - below))
		}' "$2" "$3"
}

# cpu_stat: the machine's aggregate CPU line of /proc/stat.
cpu_stat() { head -1 /proc/stat; }

# busy_pct BEFORE AFTER: how busy the machine's CPUs were between two
# cpu_stat lines, in percent (idle and iowait count as not busy).
busy_pct() {
	printf '%s\n%s\n' "$1" "$2" | awk '{ t = 0; for (i = 2; i <= NF; i++) t += $i; tot[NR] = t; idle[NR] = $5 + $6 }
		END { if (tot[2] > tot[1]) printf "%.0f", 100 * (1 - (idle[2] - idle[1]) / (tot[2] - tot[1])); else print "n/a" }'
}

# start_sluice_push NAME FSYNC: a Sluice without targets, sets SP_PID/SP_URL.
start_sluice_push() {
	local p
	p=$(port)
	cat >"$WORK/sluice-$1.yml" <<-EOF
		self_metrics:
		  forward: false
		wal:
		  fsync: $2
	EOF
	start_bg "$1" "$SLUICE" --web.listen-address="127.0.0.1:$p" --wal.dir="$WORK/$1-wal" \
		--config.file="$WORK/sluice-$1.yml" --log.level=warn
	SP_PID=$LAST_PID
	SP_URL=http://127.0.0.1:$p
	wait_ready "$SP_URL/-/ready"
}

if [ "$SKIP_PUSH" != 1 ]; then
	# Sluice's maximum with each fsync mode, in rounds (always interval,
	# interval always, ...), each run in a fresh process after its warm-up.
	declare -A PUSH_SIDE=([always]=sluice [interval]="sluice(fsync=interval)")
	for ((ROUND = 1; ROUND <= PUSH_ROUNDS; ROUND++)); do
		order=(always interval)
		((ROUND % 2)) || order=(interval always)
		for fs in "${order[@]}"; do
			start_sluice_push "sluice-push-$fs-$ROUND" "$fs"
			warm_up "${PUSH_SIDE[$fs]}" "$SP_URL"
			push_measure "${PUSH_SIDE[$fs]}" "$SP_PID" "$SP_URL"
			stop_pid "$SP_PID"
		done
	done
	# The p99 at half the mean maximum, with fsync always, in a fresh process.
	HALF=$(calc "${PU_RPS[sluice]} / 2" 0)
	if [ "$HALF" -gt 0 ]; then
		start_sluice_push sluice-push-half always
		warm_up "sluice@half" "$SP_URL"
		push_buckets "$SP_URL" >"$WORK/half-buckets-0"
		stat0=$(cpu_stat)
		push_measure "sluice@half" "$SP_PID" "$SP_URL" "$HALF"
		HALF_BUSY=$(busy_pct "$stat0" "$(cpu_stat)")
		push_buckets "$SP_URL" >"$WORK/half-buckets-1"
		HALF_SERVER_P99=$(bucket_quantile 0.99 "$WORK/half-buckets-0" "$WORK/half-buckets-1")
		FSYNC_MS=$(fsync_ms "$SP_URL")
		stop_pid "$SP_PID"
	fi
	# What client_golang's push package sends by default: delimited
	# protobuf. Information, not a target: one run at the maximum rate.
	start_sluice_push sluice-push-protobuf always
	warm_up "sluice(protobuf)" "$SP_URL"
	push_measure "sluice(protobuf)" "$SP_PID" "$SP_URL" 0 protobuf
	stop_pid "$SP_PID"

	if [ -x "$PUSHGATEWAY" ]; then
		p=$(port)
		# No --persistence.file: Debian's default would load (and slow the
		# run with) the groups earlier runs left.
		start_bg pushgateway "$PUSHGATEWAY" --web.listen-address="127.0.0.1:$p" --persistence.file= --log.level=warn
		PG_PID=$LAST_PID
		wait_ready "http://127.0.0.1:$p/-/ready"
		warm_up pushgateway "http://127.0.0.1:$p"
		push_measure "pushgateway" "$PG_PID" "http://127.0.0.1:$p"
		stop_pid "$PG_PID"
	fi

	for n in sluice "sluice@half" "sluice(fsync=interval)" "sluice(protobuf)" pushgateway; do
		[ -n "${PU_RPS[$n]:-}" ] || continue
		RESULTS+=("$(printf '%-28s %14s %12s %10s %10s   %s' "push: $n" "$(calc "${PU_RPS[$n]}" 0)/s" "${PU_CPUM[$n]}" \
			"$(calc "${PU_HWM[$n]} / 1024" 0)" "${PU_P99[$n]}" "$( ((${PU_N[$n]} > 1)) && echo "pushes/s by round: ${PU_RUNS[$n]}; ")${PU_SP99[$n]:+p99 from the schedule ${PU_SP99[$n]} ms (${PU_LATE[$n]} waited for a client); }$(calc "${PU_SPS[$n]}" 0) samples/s; ${PU_STAT[$n]}${PU_GROUPS[$n]:+; ${PU_GROUPS[$n]} groups}")")
	done
	verdict "$(ge "${PU_RPS[sluice]}" "$PUSH_TARGET" && echo 1 || echo 0)" \
		"pushes: Sluice $(calc "${PU_RPS[sluice]}" 0)/s >= $PUSH_TARGET/s (10x the zapier gateway's 2,800/s)"
	if [ -n "${PU_P99[sluice@half]:-}" ]; then
		# Judged on the latency from the schedule: a request that fell due
		# while every client waited for a slow answer counts that wait.
		verdict "$(ge "$P99_TARGET_MS" "${PU_SP99[sluice@half]}" && echo 1 || echo 0)" \
			"push p99 at half of Sluice's max ($HALF/s, achieved $(calc "${PU_RPS[sluice@half]}" 0)/s): ${PU_SP99[sluice@half]} ms from the schedule (${PU_LATE[sluice@half]} requests waited for a free client), ${PU_P99[sluice@half]} ms from the send < $P99_TARGET_MS ms (mean WAL fsync $FSYNC_MS ms)"
		VERDICTS+=("INFO  at half of the max: the CPUs were $HALF_BUSY% busy; Sluice's own p99 (sluice_push_duration_seconds, handler start to answer, WAL wait included) $HALF_SERVER_P99 ms against the generator's ${PU_P99[sluice@half]} ms")
	fi
	COST=$(calc "100 * (1 - ${PU_RPS[sluice]} / ${PU_RPS[sluice(fsync=interval)]})" 2)
	verdict "$(ge "$GROUP_COMMIT_MAX" "$COST" && echo 1 || echo 0)" \
		"group commit cost: fsync always $(calc "${PU_RPS[sluice]}" 0)/s vs interval $(calc "${PU_RPS[sluice(fsync=interval)]}" 0)/s = $COST% < $GROUP_COMMIT_MAX%"
	VERDICTS+=("INFO  pushes with protobuf bodies (client_golang push's default), fsync always: $(calc "${PU_RPS[sluice(protobuf)]}" 0)/s, $(calc "100 * ${PU_RPS[sluice(protobuf)]} / ${PU_RPS[sluice]}" 0)% of the text rate")
	if [ -n "${PU_RPS[pushgateway]:-}" ]; then
		VERDICTS+=("INFO  pushes, Sluice / Pushgateway: rate $(calc "${PU_RPS[sluice]} / ${PU_RPS[pushgateway]}" 1)x, CPU per sample $(calc "${PU_CPUM[sluice]} / ${PU_CPUM[pushgateway]}" 3)x, peak RSS $(calc "${PU_HWM[sluice]} / ${PU_HWM[pushgateway]}")x, p99 $(calc "${PU_P99[sluice]} / ${PU_P99[pushgateway]}" 3)x (each at its own maximum rate)")
	fi
fi

# --- 3. Memory per live series and restart ---------------------------------

if [ "$SKIP_SERIES" != 1 ]; then
	N=$((MEM_GROUPS * MEM_SERIES))
	p=$(port)
	MEM_URL=http://127.0.0.1:$p
	cat >"$WORK/sluice-mem.yml" <<-EOF
		self_metrics:
		  forward: false
		limits:
		  max_series: $((N * 2 + 10000))
		  max_series_per_group: $((MEM_SERIES * 2 + 100))
		  max_series_per_request: $((MEM_SERIES * 2 + 100))
	EOF
	# Forwarding as a deployment would: every window goes to a counting
	# sink, so the forward queues' memory is in the figures too.
	start_sink
	MEM_SINK_PID=$SINK_PID
	MEM_ARGS=(--web.listen-address="127.0.0.1:$p" --wal.dir="$WORK/mem-wal" --config.file="$WORK/sluice-mem.yml"
		--remote-write.url="$SINK_URL/api/v1/write" --log.level=warn)
	# gctrace: each GC logs the live heap it found ("a->b->LIVE MB").
	start_bg sluice-mem env GODEBUG=gctrace=1 "$SLUICE" "${MEM_ARGS[@]}"
	MEM_PID=$LAST_PID
	wait_ready "$MEM_URL/-/ready"
	RSS0=$(status_kb "$MEM_PID" VmRSS)
	log "series: pushing $MEM_GROUPS groups x $MEM_SERIES series = $N live series"
	gen "$LT" series -url "$MEM_URL" -groups "$MEM_GROUPS" -series "$MEM_SERIES" -json >"$WORK/series.json" ||
		die "series generator failed"
	log "series: $(jget "$WORK/series.json" ok) of $MEM_GROUPS pushes accepted ($(jstatuses "$WORK/series.json"))"
	LOAD_END=$(date +%s)
	sleep 2
	check_alive "$MEM_PID" sluice-mem
	RSS1=$(status_kb "$MEM_PID" VmRSS)
	HWM1=$(status_kb "$MEM_PID" VmHWM)
	# Restart the peak (VmHWM) from here, so that the one read below is
	# the windows' after the load, not the load's own.
	HWM_FROM="since the load"
	echo 5 >"/proc/$MEM_PID/clear_refs" 2>/dev/null || HWM_FROM="since start (clear_refs not writable)"
	# RSS also holds garbage (GOGC=100 lets the heap grow to twice what is
	# live) and memory not yet returned to the OS. For the live heap, wait
	# for three GCs that start after the load and take the smallest live
	# heap (a GC during a checkpoint or a flush also counts their buffers):
	# small pushes to one extra group make garbage without adding live state.
	GC0=$(gc_count "$WORK/sluice-mem.log")
	for _ in $(seq 20); do
		[ "$(gc_count "$WORK/sluice-mem.log")" -ge $((GC0 + 3)) ] && break
		gen "$LT" push -url "$MEM_URL" -job gcprobe -groups 1 -duration 2s -concurrency 8 -json >/dev/null ||
			die "gc probe pushes failed"
	done
	LIVE_HEAP_MIB=$(grep '^gc [0-9]' "$WORK/sluice-mem.log" | tail -n +$((GC0 + 1)) |
		sed -n 's/.* [0-9]*->[0-9]*->\([0-9]*\) MB.*/\1/p' | sort -n | head -n1)
	GCS=$(($(gc_count "$WORK/sluice-mem.log") - GC0))
	# The peak over whole windows: every aggregation interval (15 s) a
	# flush renders every series and a checkpoint copies them. Two
	# intervals after the load, at least one of each has run. Read before
	# /metrics, whose rendering of every series would count too.
	while [ $(($(date +%s) - LOAD_END)) -lt 32 ]; do sleep 1; done
	check_alive "$MEM_PID" sluice-mem
	HWM2=$(status_kb "$MEM_PID" VmHWM)
	# Read after RSS: rendering /metrics with every series costs memory.
	"$LT" fetch -url "$MEM_URL/metrics" -sum go_memstats_heap_inuse_bytes -sum sluice_series >"$WORK/mem-metrics.txt" ||
		die "fetch $MEM_URL/metrics failed"
	HEAP=$(awk '$1 == "go_memstats_heap_inuse_bytes" { print $2 }' "$WORK/mem-metrics.txt")
	LIVE=$(awk '$1 == "sluice_series" { print $2 }' "$WORK/mem-metrics.txt")
	[ "${LIVE%.*}" -gt 0 ] 2>/dev/null || LIVE=$N
	WALB=$(du -sb "$WORK/mem-wal" | cut -f1)
	BPS_RSS=$(calc "($RSS1 - $RSS0) * 1024 / $LIVE" 0)
	BPS_PEAK=$(calc "($HWM2 - $RSS0) * 1024 / $LIVE" 0)
	BPS_HEAP=$(calc "$HEAP / $LIVE" 0)
	if [ -n "$LIVE_HEAP_MIB" ]; then
		BPS_LIVE=$(calc "$LIVE_HEAP_MIB * 1048576 / $LIVE" 0)
		LIVE_NOTE="live heap (least of $GCS GCs after the load) $LIVE_HEAP_MIB MiB = $BPS_LIVE B/series"
	else
		BPS_LIVE=
		LIVE_NOTE="no GC after the load: live heap unknown"
	fi

	log "series: kill -9 and restart on the same WAL ($(calc "$WALB / 1048576" 1) MiB)"
	kill -KILL "$MEM_PID"
	wait "$MEM_PID" 2>/dev/null || true
	T0=$(date +%s.%N)
	start_bg sluice-mem-restart "$SLUICE" "${MEM_ARGS[@]}"
	MEM_PID=$LAST_PID
	READY=$("$LT" wait -url "$MEM_URL/-/ready" -since "$T0" -timeout 300s) || die "Sluice not ready within 300 s after restart"
	RSS2=$(status_kb "$MEM_PID" VmRSS)
	LIVE2=$("$LT" fetch -url "$MEM_URL/metrics" -sum sluice_series | awk '{ print $2 }')
	stop_pid "$MEM_PID"
	MEM_FWD=$("$LT" fetch -url "$SINK_URL/count" | sed -n 's/.*"samples":\([0-9]*\).*/\1/p')
	stop_pid "$MEM_SINK_PID"

	RESULTS+=("$(printf '%-28s %s' "series: $(calc "$LIVE" 0) live" \
		"RSS $(calc "$RSS0 / 1024" 0) -> $(calc "$RSS1 / 1024" 0) MiB (peak $(calc "$HWM1 / 1024" 0)) = $BPS_RSS B/series; peak over 2 windows after the load ($HWM_FROM) $(calc "$HWM2 / 1024" 0) MiB = $BPS_PEAK B/series; heap in use $(calc "$HEAP / 1048576" 0) MiB; $LIVE_NOTE; WAL+checkpoint $(calc "$WALB / 1048576" 1) MiB; windows forwarded to the sink: ${MEM_FWD:-0} samples")")
	RESULTS+=("$(printf '%-28s %s' "restart after kill -9" "ready in $READY s; $(calc "$LIVE2" 0) series back; RSS $(calc "$RSS2 / 1024" 0) MiB")")
	verdict "$(ge "$BYTES_PER_SERIES_MAX" "$BPS_RSS" && echo 1 || echo 0)" \
		"memory: $BPS_RSS bytes per live series (RSS growth / series, 2 s after the load) < $BYTES_PER_SERIES_MAX"
	verdict "$(ge "$BYTES_PER_SERIES_MAX" "$BPS_PEAK" && echo 1 || echo 0)" \
		"memory: $BPS_PEAK bytes per live series at the peak RSS over 2 windows after the load (flush and checkpoint included) < $BYTES_PER_SERIES_MAX"
	if [ -n "$BPS_LIVE" ]; then
		verdict "$(ge "$BYTES_PER_SERIES_MAX" "$BPS_LIVE" && echo 1 || echo 0)" \
			"memory: $BPS_LIVE bytes of live heap per live series (after a GC) < $BYTES_PER_SERIES_MAX"
	fi
	# At least two whole windows of every series reached the sink, or the
	# memory figures did not include forwarding.
	verdict "$(ge "${MEM_FWD:-0}" "$((2 * N))" && echo 1 || echo 0)" \
		"memory test forwarded its windows: the sink got ${MEM_FWD:-0} samples >= 2 windows of $N series"
	verdict "$(ge "$RESTART_MAX_S" "$READY" && echo 1 || echo 0)" \
		"restart with $(calc "$LIVE" 0) series: ready in $READY s < $RESTART_MAX_S s"
	verdict "$(ge "${LIVE2:-0}" "$LIVE" && echo 1 || echo 0)" \
		"restart: every series back after kill -9 ($(calc "${LIVE2:-0}" 0) of $(calc "$LIVE" 0))"
fi

# --- report ---------------------------------------------------------------

echo
echo "Sluice performance comparison ($(date -u +%FT%TZ), $(uname -m), $NCPU CPUs, COMPARE_SECONDS=$SECS)"
echo "$PIN_NOTE."
echo "CPU: utime+stime of the proxy process from /proc/<pid>/stat over the run and the sink drain;"
echo "peak RSS: VmHWM from /proc/<pid>/status; p99: generator's request latency from the send (at a fixed"
echo "rate also from the schedule: a request due while every client waited counts that wait)."
echo "rate: samples/s accepted for the relay, pushes/s for pushes; CPU s/M: CPU seconds per million samples."
echo
printf '%-28s %14s %12s %10s %10s   %s\n' "" "rate" "CPU s/M" "peak MiB" "p99 ms" "notes"
for r in "${RESULTS[@]}"; do echo "$r"; done
echo
for v in "${VERDICTS[@]}"; do echo "$v"; done
