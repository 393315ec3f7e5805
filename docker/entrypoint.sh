#!/usr/bin/env bash
# The image's entrypoint. It starts `ollama serve` (one per GPU when OLLAMA_GPUS says so),
# waits until each answers, warms the model in each with the server's own load-time options
# (`python -m server preload`), then runs the Python process that MODE names and supervises
# them all:
#
#   MODE=server      python -m server   (RunPod pod or load-balancing endpoint; the default)
#   MODE=serverless  python handler.py  (RunPod queue endpoint worker)
#   MODE=ollama      Ollama only, no preload, for a server in another container (a fleet)
#
# - OLLAMA_GPUS: 1 (the default) runs one Ollama that sees every GPU; auto runs one per GPU
#   that nvidia-smi lists (one when it lists fewer than two); N runs N, one on each of the
#   first N GPUs; 0 runs none (the server then uses only the Ollamas of OLLAMA_HOSTS). With
#   several, Ollama i listens on OLLAMA_HOST's port + i and sees one GPU
#   (CUDA_VISIBLE_DEVICES). The server gets them all in OLLAMA_HOSTS, these first, then the
#   ones OLLAMA_HOSTS named (Ollamas elsewhere).
# - OLLAMA_PER_GPU: K (default 1) runs K Ollamas where one would run (on each GPU, or K
#   seeing every GPU), each its own process with its own slots. With OLLAMA_NUM_PARALLEL=1
#   and one Ollama per concurrent call, no call's prompt cache is taken by another call
#   (docs/benchmark.md, the fleet); each holds its own copy of the weights.
# - SIGTERM or SIGINT: the Python process gets SIGTERM first (background children of a
#   script ignore SIGINT); once it has drained its in-flight turns and exited, every Ollama
#   gets SIGTERM. Exit status 0 when the Python process stopped cleanly.
# - An `ollama serve` that exits on its own is started again, at most OLLAMA_RESTARTS times
#   each (the server fails its turns over meanwhile and warms it again); one more exit ends
#   the container (status 1). In MODE=server the server's /health is read every
#   HEALTH_INTERVAL seconds, and an Ollama it reports stuck (a slot held by a lost request,
#   ollama/ollama#17131) is restarted, that one only; the server then warms it again.
# - If the Python process exits on its own, every Ollama is stopped and the container exits
#   non-zero.
# - Startup failures exit 1 with a line saying why (except a failed preload in serverless
#   mode: the worker starts anyway and fails jobs with the reason); bad settings exit 2
#   before anything starts.
#
# Settings (environment): MODE, OLLAMA_GPUS, OLLAMA_PER_GPU, APP_DIR (where server/ and handler.py are),
# PYTHON (the interpreter), OLLAMA_START_TIMEOUT, PRELOAD_TIMEOUT, OLLAMA_STOP_TIMEOUT,
# HEALTH_INTERVAL (seconds), OLLAMA_RESTARTS. Everything else (OLLAMA_HOST, OLLAMA_HOSTS,
# MODEL, PORT, NUM_CTX...) passes through to Ollama and to the server, which read it
# themselves.
set -euo pipefail

APP_DIR=${APP_DIR:-/app}
PYTHON=${PYTHON:-/opt/venv/bin/python}
MODE=${MODE:-server}
OLLAMA_GPUS=${OLLAMA_GPUS:-1}
OLLAMA_PER_GPU=${OLLAMA_PER_GPU:-1}
OLLAMA_START_TIMEOUT=${OLLAMA_START_TIMEOUT:-60}
PRELOAD_TIMEOUT=${PRELOAD_TIMEOUT:-300}
OLLAMA_STOP_TIMEOUT=${OLLAMA_STOP_TIMEOUT:-10}
HEALTH_INTERVAL=${HEALTH_INTERVAL:-5}
OLLAMA_RESTARTS=${OLLAMA_RESTARTS:-3}

# This container's Ollamas, by index: address (their OLLAMA_HOST), URL, GPU
# (CUDA_VISIBLE_DEVICES; empty for one that sees every GPU), process (empty while it is
# not running), restarts after exits so far, and until when (µs since the epoch) the
# server's report of it as stuck is ignored (see start_again).
ollama_hosts=()
ollama_urls=()
ollama_gpus=()
ollama_pids=()
ollama_restarts=()
ollama_grace=()
declare -A ollama_of_pid=() # process -> index
declare -A ollama_of_url=() # URL -> index
remote_urls=()              # Ollamas elsewhere, from OLLAMA_HOSTS
children=()                 # the Python processes of this step: the preloads, then the server or worker
child_name=""
declare -A preload_of_pid=() # preload process -> index of its Ollama
watch_pid=""                 # the pending check of the server's /health
watch_file=""
stop_signal="" # TERM or INT, once one has arrived
next_pid=""    # set by wait_next
next_status=0
reaped_status=0

log() {
  printf 'entrypoint: %s\n' "$*" >&2
}

# Microseconds since the epoch.
now_us() {
  local now=${EPOCHREALTIME//[!0-9]/}
  printf '%s' "$((10#$now))"
}

# A note on `wait -n`: it waits only for jobs still in the shell's job table, and bash
# drops a job that has ended from that table when it starts the next background job
# (`wait -n` then says "no such job"). Plain `wait PID` still returns such a job's status,
# so a child that is no longer running (kill -0 fails) is collected with it first.

# The exit status of the child $1, which is no longer running, in reaped_status.
collect() {
  reaped_status=0
  wait "$1" 2>/dev/null || reaped_status=$?
}

# Wait until the child $1 has exited, whatever signals arrive meanwhile; its exit status
# goes to reaped_status.
reap() {
  local finished status
  while :; do
    if ! kill -0 "$1" 2>/dev/null; then
      collect "$1"
      return 0
    fi
    status=0
    wait -n -p finished "$1" || status=$?
    # 127: not (or no longer) a child of this shell.
    if [[ -n ${finished:-} || $status == 127 ]]; then
      reaped_status=$status
      return 0
    fi
  done
}

# Wait until the child $1 has exited (true) or the clock passes $2, in microseconds (false).
# It polls rather than using `wait -n`: bash can drop a finished child from the jobs that
# `wait -n` watches when it starts another background process, and then waits for ever.
wait_exit() {
  local pid=$1 stat state
  while :; do
    state=""
    if kill -0 "$pid" 2>/dev/null && stat=$(<"/proc/$pid/stat") 2>/dev/null; then
      state=${stat##*) }
      state=${state%% *}
    fi
    if [[ -z $state || $state == Z ]]; then # gone, or only waiting to be reaped
      collect "$pid"
      return 0
    fi
    (($(now_us) < $2)) || return 1
    sleep 0.05
  done
}

# How Ollama $1 is named in messages.
ollama_name() {
  if [[ -n ${ollama_gpus[$1]} ]]; then
    printf 'ollama serve at %s (GPU %s)' "${ollama_urls[$1]}" "${ollama_gpus[$1]}"
  else
    printf 'ollama serve at %s' "${ollama_urls[$1]}"
  fi
}

# Start Ollama $1 in a session of its own, so that stopping it reaches the llama-server
# runners it starts too: they hold the GPU's memory, and outlive an `ollama serve` that is
# killed. One of several sees only its own GPU, through CUDA; Vulkan (on by default in
# Ollama) would still show it the others.
start_ollama() {
  local i=$1
  if [[ -n ${ollama_gpus[i]} ]]; then
    OLLAMA_HOST=${ollama_hosts[i]} CUDA_VISIBLE_DEVICES=${ollama_gpus[i]} OLLAMA_VULKAN=0 \
      setsid ollama serve &
  else
    OLLAMA_HOST=${ollama_hosts[i]} setsid ollama serve &
  fi
  ollama_pids[i]=$!
  ollama_of_pid[$!]=$i
}

# Forget the exited Ollama $1 and kill what is left of its session.
forget_ollama() {
  local pid=${ollama_pids[$1]}
  unset "ollama_of_pid[$pid]"
  ollama_pids[$1]=""
  kill -s KILL -- "-$pid" 2>/dev/null || true
}

# Stop the Ollamas $@ (indices) at once: SIGTERM, then SIGKILL for any still running after
# OLLAMA_STOP_TIMEOUT seconds.
stop_ollamas() {
  local i pid
  local -a stopping=()
  for i in "$@"; do
    [[ -n ${ollama_pids[i]} ]] || continue
    kill -s TERM "${ollama_pids[i]}" 2>/dev/null || true
    stopping+=("$i")
  done
  local deadline=$(($(now_us) + OLLAMA_STOP_TIMEOUT * 1000000))
  for i in "${stopping[@]}"; do
    pid=${ollama_pids[i]}
    if ! wait_exit "$pid" "$deadline"; then
      log "$(ollama_name "$i") did not stop within $OLLAMA_STOP_TIMEOUT s (OLLAMA_STOP_TIMEOUT); killing it"
      kill -s KILL -- "-$pid" 2>/dev/null || true
      reap "$pid"
    fi
    forget_ollama "$i"
  done
}

stop_watch() {
  if [[ -n $watch_pid ]]; then
    kill "$watch_pid" 2>/dev/null || true
    reap "$watch_pid"
    watch_pid=""
  fi
}

# Log an error, stop whatever runs and exit with status $1.
fail() {
  local pid
  log "error: $2"
  for pid in "${children[@]}"; do
    kill -s TERM "$pid" 2>/dev/null || true
  done
  for pid in "${children[@]}"; do
    reap "$pid"
  done
  children=()
  stop_watch
  stop_ollamas "${!ollama_pids[@]}"
  exit "$1"
}

# Called by the TERM and INT traps.
# shellcheck disable=SC2329
on_signal() {
  local pid
  if [[ -z $stop_signal ]]; then
    stop_signal=$1
    if ((${#children[@]})); then
      log "SIG$1 received: stopping $child_name, then Ollama"
    else
      log "SIG$1 received: stopping"
    fi
  fi
  for pid in "${children[@]}"; do
    kill -s TERM "$pid" 2>/dev/null || true
  done
}

# After a stop signal, once the Python children (if any) have exited, the worst with status
# $1: stop every Ollama and exit.
finish_stop() {
  stop_watch
  stop_ollamas "${!ollama_pids[@]}"
  case $1 in
    0 | 143) ;; # done, or ended by the forwarded SIGTERM
    *)
      log "error: $child_name exited with status $1 while stopping"
      exit "$1"
      ;;
  esac
  log "stopped cleanly"
  exit 0
}

# Start a Python child: "$PYTHON" "$@".
start_child() {
  "$PYTHON" "$@" &
  children+=("$!")
  # A signal that arrived before the child was listed has not been forwarded to it yet.
  if [[ -n $stop_signal ]]; then
    kill -s TERM "$!" 2>/dev/null || true
  fi
}

# Remove the exited child $1 from the list.
forget_child() {
  local pid
  local -a left=()
  for pid in "${children[@]}"; do
    [[ $pid == "$1" ]] || left+=("$pid")
  done
  children=("${left[@]}")
}

# Start the watch on the server's /health: a process that reads it every
# HEALTH_INTERVAL seconds and exits once it reports an Ollama of this container stuck,
# out of its grace (see start_again), writing "stuck <url>" for each such one and
# "cleared <url>" for each whose grace ended early (the server warmed it) into
# watch_file. A /health that does not answer is read again at the next interval.
start_watch() {
  [[ $MODE == server && ${#ollama_urls[@]} -gt 0 && -z $stop_signal ]] || return 0
  local i
  local -a graces=()
  for i in "${!ollama_urls[@]}"; do graces+=("${ollama_urls[i]}=${ollama_grace[i]}"); done
  "$PYTHON" -I -c '
import json, sys, time, urllib.error, urllib.request
interval, health = float(sys.argv[1]), sys.argv[2] + "/health"
grace = {url: int(until) for url, _, until in (arg.rpartition("=") for arg in sys.argv[3:])}
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
cleared = []
while True:
    time.sleep(interval)
    try:
        with opener.open(health, timeout=5) as response:
            body = response.read()
    except urllib.error.HTTPError as exc:  # 503: no Ollama ready; the same report
        body = exc.read()
    except OSError:
        continue
    try:
        backends = json.loads(body)["backends"]
    except (ValueError, KeyError, TypeError):
        continue
    now, stuck = time.time() * 1e6, []
    for backend in backends:
        url = backend.get("url")
        if url not in grace:
            continue
        if not backend.get("stuck"):
            if grace[url]:
                grace[url] = 0
                cleared.append(url)
        elif now >= grace[url]:
            stuck.append(url)
    if stuck:
        print(*(f"cleared {url}" for url in cleared), *(f"stuck {url}" for url in stuck), sep="\n")
        sys.exit(0)
' "$HEALTH_INTERVAL" "$health_url" "${graces[@]}" >"$watch_file" 2>/dev/null &
  watch_pid=$!
}

# Wait for the next event: a Python child, an Ollama or the /health check exiting, or a
# signal. Sets next_pid (empty after a signal, whose trap has run) and next_status.
wait_next() {
  local pid
  local -a pids=("${children[@]}")
  for pid in "${ollama_pids[@]}"; do
    [[ -z $pid ]] || pids+=("$pid")
  done
  [[ -z $watch_pid ]] || pids+=("$watch_pid")
  for pid in "${pids[@]}"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      collect "$pid"
      next_pid=$pid
      next_status=$reaped_status
      return 0
    fi
  done
  next_pid=""
  next_status=0
  wait -n -p next_pid "${pids[@]}" || next_status=$?
  next_pid=${next_pid:-} # unset after a signal
  if [[ -z $next_pid && $next_status == 127 ]]; then
    fail 1 "none of the processes ${pids[*]} is a child of the entrypoint any more"
  fi
}

# Ollama $1 exited with status $2 while the Python process ran: start it again, unless it
# has used up its restarts (then end the container) or the container is stopping.
on_ollama_exit() {
  local i=$1 status=$2 restarts=${ollama_restarts[$1]}
  forget_ollama "$i"
  [[ -z $stop_signal ]] || return 0
  if ((restarts >= OLLAMA_RESTARTS)); then
    if ((restarts == 0)); then
      fail 1 "$(ollama_name "$i") exited with status $status (OLLAMA_RESTARTS=0); stopping"
    fi
    local times=restarts
    ((restarts > 1)) || times=restart
    fail 1 "$(ollama_name "$i") exited with status $status, after $restarts $times (OLLAMA_RESTARTS=$OLLAMA_RESTARTS); stopping"
  fi
  ollama_restarts[i]=$((restarts + 1))
  log "$(ollama_name "$i") exited with status $status; starting it again (restart $((restarts + 1)) of OLLAMA_RESTARTS=$OLLAMA_RESTARTS)"
  start_again "$i"
  # The watch holds the graces it started with: give it this one's.
  if [[ -n $watch_pid ]]; then
    stop_watch
    start_watch
  fi
}

# Start Ollama $1 again. Until the server has warmed it (or for as long as a start and a
# preload may take), the server's report of it as stuck is the old process's.
start_again() {
  start_ollama "$1"
  ollama_grace[$1]=$(($(now_us) + (OLLAMA_START_TIMEOUT + PRELOAD_TIMEOUT) * 1000000))
}

# The watch ended with status $1: restart each Ollama it reports stuck, then watch again.
on_watch() {
  local verdict url i
  watch_pid=""
  if (($1 == 0)); then
    while read -r verdict url; do
      i=${ollama_of_url[$url]}
      if [[ $verdict == cleared ]]; then
        ollama_grace[i]=0
      elif [[ -z $stop_signal && -n ${ollama_pids[i]} ]]; then
        log "the server reports $(ollama_name "$i") stuck; restarting it"
        stop_ollamas "$i"
        [[ -z $stop_signal ]] || return 0
        start_again "$i"
      fi
    done <"$watch_file"
  fi
  start_watch
}

# Supervise until the Python child exits (it is then forgotten; next_status is its status),
# restarting Ollamas that exit or get stuck. In MODE=ollama, until a stop signal.
supervise() {
  start_watch
  while :; do
    wait_next
    if [[ -z $next_pid ]]; then
      # A signal: with a Python child, its trap has forwarded it and the child will exit.
      if [[ -n $stop_signal && ${#children[@]} == 0 ]]; then
        finish_stop 0
      fi
    elif [[ $next_pid == "$watch_pid" ]]; then
      on_watch "$next_status"
    elif [[ -n ${ollama_of_pid[$next_pid]-} ]]; then
      on_ollama_exit "${ollama_of_pid[$next_pid]}" "$next_status"
    else
      forget_child "$next_pid"
      return 0
    fi
  done
}

# Warm the model in every Ollama at once, one preload each; in server mode a failure ends
# the container. An Ollama exiting meanwhile ends it too.
preload_all() {
  local i pid worst=0
  child_name="python -m server preload"
  for i in "${!ollama_urls[@]}"; do
    start_child -m server preload --wait "$PRELOAD_TIMEOUT" --ollama-url "${ollama_urls[i]}"
    preload_of_pid[${children[-1]}]=$i
  done
  while ((${#children[@]})); do
    wait_next
    if [[ -z $next_pid ]]; then
      continue # a signal: its trap has forwarded it to the preloads
    elif [[ -n ${ollama_of_pid[$next_pid]-} ]]; then
      i=${ollama_of_pid[$next_pid]}
      forget_ollama "$i"
      # At start an Ollama that exits ends the container; while stopping it is forgotten.
      [[ -n $stop_signal ]] || fail 1 "$(ollama_name "$i") exited with status $next_status; stopping $child_name"
      continue
    fi
    pid=$next_pid
    i=${preload_of_pid[$pid]}
    forget_child "$pid"
    if [[ -n $stop_signal ]]; then
      ((next_status == 0 || next_status == 143 || worst != 0)) || worst=$next_status
    elif ((next_status != 0)); then
      if [[ $MODE != serverless ]]; then
        fail 1 "model $model is not warm in Ollama at ${ollama_urls[i]}: the preload says why above (it waits up to PRELOAD_TIMEOUT=$PRELOAD_TIMEOUT s)"
      fi
      # A serverless worker that exits is restarted over and over; instead the worker
      # starts, keeps trying to warm the model, and fails each job with the reason.
      log "warning: model $model is not warm in Ollama at ${ollama_urls[i]} (the preload says why above); starting the worker anyway"
    fi
  done
  [[ -z $stop_signal ]] || finish_stop "$worst"
}

# Wait until every Ollama of this container answers GET /api/version, at most
# OLLAMA_START_TIMEOUT seconds; one that exits first, or the deadline, ends the container.
wait_answering() {
  local i answered
  local deadline=$(($(now_us) + OLLAMA_START_TIMEOUT * 1000000))
  local -a waiting=("${!ollama_urls[@]}") urls still
  while :; do
    urls=()
    for i in "${waiting[@]}"; do urls+=("${ollama_urls[i]}"); done
    answered=$("$PYTHON" -I -c '
import sys, urllib.request
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
for url in sys.argv[1:]:
    try:
        opener.open(url + "/api/version", timeout=2).close()
    except OSError:
        continue
    print(url)
' "${urls[@]}" 2>/dev/null) || true
    still=()
    for i in "${waiting[@]}"; do
      [[ $'\n'$answered$'\n' != *$'\n'${ollama_urls[i]}$'\n'* ]] || continue
      if ! kill -0 "${ollama_pids[i]}" 2>/dev/null; then
        reap "${ollama_pids[i]}"
        forget_ollama "$i"
        fail 1 "$(ollama_name "$i") exited with status $reaped_status before answering"
      fi
      still+=("$i")
    done
    waiting=("${still[@]}")
    ((${#waiting[@]})) || return 0
    [[ -z $stop_signal ]] || finish_stop 0
    if (($(now_us) >= deadline)); then
      fail 1 "Ollama did not answer at ${ollama_urls[${waiting[0]}]} within $OLLAMA_START_TIMEOUT s (OLLAMA_START_TIMEOUT)"
    fi
    sleep 0.2
  done
}

# The GPUs nvidia-smi lists, one UUID a line; nothing without nvidia-smi or a driver.
list_gpus() {
  local listed line
  command -v nvidia-smi >/dev/null || return 0
  listed=$(timeout 30 nvidia-smi --query-gpu=uuid --format=csv,noheader 2>/dev/null) || return 0
  while read -r line; do
    [[ -z $line ]] || printf '%s\n' "$line"
  done <<<"$listed"
}

trap 'on_signal TERM' TERM
trap 'on_signal INT' INT

case $MODE in
  server) app=(-m server) ;;
  serverless) app=(handler.py) ;;
  ollama) app=() ;;
  *) fail 2 "MODE=$MODE is not 'server', 'serverless' or 'ollama'" ;;
esac
if (($# > 0)); then
  fail 2 "no arguments are taken (got: $*); configure with environment variables"
fi
for setting in OLLAMA_START_TIMEOUT PRELOAD_TIMEOUT OLLAMA_STOP_TIMEOUT HEALTH_INTERVAL; do
  if [[ ! ${!setting} =~ ^[1-9][0-9]{0,5}$ ]]; then
    fail 2 "$setting=${!setting} is not a whole number of seconds above zero"
  fi
done
if [[ ! $OLLAMA_PER_GPU =~ ^[1-9][0-9]?$ ]]; then
  fail 2 "OLLAMA_PER_GPU=$OLLAMA_PER_GPU is not a whole number of Ollamas from 1 to 99"
fi
if [[ ! $OLLAMA_RESTARTS =~ ^[0-9]{1,6}$ ]]; then
  fail 2 "OLLAMA_RESTARTS=$OLLAMA_RESTARTS is not a whole number"
fi
[[ -x $PYTHON ]] || fail 2 "PYTHON=$PYTHON is not an executable"
cd "$APP_DIR" 2>/dev/null || fail 2 "APP_DIR=$APP_DIR is not a directory"

# How many Ollamas, on which GPUs.
gpus=()
if [[ $OLLAMA_GPUS == 0 ]]; then
  count=0
else
  mapfile -t gpus < <(list_gpus)
  if [[ $OLLAMA_GPUS == auto ]]; then
    count=${#gpus[@]}
    ((count > 1)) || count=1
  elif [[ $OLLAMA_GPUS =~ ^[1-9][0-9]{0,2}$ ]]; then
    count=$OLLAMA_GPUS
    if ((count > 1 && ${#gpus[@]} == 0)); then
      # No GPU listed (no nvidia-smi): CUDA's own numbering.
      for ((i = 0; i < count; i++)); do gpus+=("$i"); done
    elif ((count > 1 && count > ${#gpus[@]})); then
      fail 2 "OLLAMA_GPUS=$OLLAMA_GPUS, but nvidia-smi lists ${#gpus[@]} GPUs"
    fi
  else
    fail 2 "OLLAMA_GPUS=$OLLAMA_GPUS is not 'auto' or a whole number of Ollamas"
  fi
  if ((count == 1 && ${#gpus[@]} > 1)); then
    log "nvidia-smi lists ${#gpus[@]} GPUs and one Ollama sees them all (OLLAMA_GPUS=$OLLAMA_GPUS); for a model that fits one GPU, OLLAMA_GPUS=auto runs one Ollama per GPU"
  fi
  ((count > 1)) || gpus=("") # one Ollama: every GPU
  if ((OLLAMA_PER_GPU > 1)); then
    spread=()
    for gpu in "${gpus[@]}"; do
      for ((k = 0; k < OLLAMA_PER_GPU; k++)); do spread+=("$gpu"); done
    done
    gpus=("${spread[@]}")
    count=${#gpus[@]}
  fi
fi
if [[ $MODE == ollama && $count == 0 ]]; then
  fail 2 "MODE=ollama with OLLAMA_GPUS=0 would run nothing"
fi

# The server's own configuration gives the Ollamas' URLs (OLLAMA_HOST's port, plus one for
# each further Ollama) and reports an invalid setting now, before anything starts.
if ! settings=$("$PYTHON" -c '
import os, sys
from server.config import ConfigError, parse_config
count, mode = int(sys.argv[1]), sys.argv[2]
env = dict(os.environ)
remote = [url.strip() for url in env.pop("OLLAMA_HOSTS", "").split(",") if url.strip()]
try:
    host, _, port = parse_config([], env=env).ollama_url.removeprefix("http://").rpartition(":")
    local = [f"http://{host}:{int(port) + i}" for i in range(count)]
    if mode == "ollama":
        remote = []
    elif not local and not remote:
        raise ConfigError("OLLAMA_GPUS=0 starts no Ollama here: list the Ollamas to use in OLLAMA_HOSTS")
    config = parse_config([], env={**env, "OLLAMA_HOSTS": ",".join(local + remote)})
    for url in config.ollama_urls[:count] if mode == "server" else ():
        if int(url.rpartition(":")[2]) in (config.port, config.health_port):
            raise ConfigError(f"the server would listen on the port of the Ollama at {url}")
except ConfigError as exc:
    sys.exit(str(exc))
for url in config.ollama_urls:
    print("local" if url in local else "remote", url)
listen = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(config.host, config.host)
print("health", f"http://[{listen}]:{config.port}" if ":" in listen else f"http://{listen}:{config.port}")
print("model", config.model)
print("slots", config.max_concurrency)
' "$count" "$MODE" 2>&1); then
  fail 2 "invalid settings: ${settings##*$'\n'}"
fi
model="" slots="" health_url=""
while read -r key value; do
  case $key in
    local)
      ollama_of_url[$value]=${#ollama_urls[@]}
      ollama_urls+=("$value")
      ollama_hosts+=("${value#http://}")
      ;;
    remote) remote_urls+=("$value") ;;
    health) health_url=$value ;;
    model) model=$value ;;
    slots) slots=$value ;;
  esac
done <<<"$settings"
for i in "${!ollama_urls[@]}"; do
  ollama_gpus[i]=${gpus[i]}
  ollama_pids[i]=""
  ollama_restarts[i]=0
  ollama_grace[i]=0
done
all_urls=("${ollama_urls[@]}" "${remote_urls[@]}")
export OLLAMA_HOSTS
OLLAMA_HOSTS=$(IFS=,; printf '%s' "${all_urls[*]}")
if [[ $MODE != ollama && $count -gt 0 && $slots != "${OLLAMA_NUM_PARALLEL:-1}" ]]; then
  log "warning: the server's MAX_CONCURRENCY=$slots turns per Ollama differs from each Ollama's OLLAMA_NUM_PARALLEL=${OLLAMA_NUM_PARALLEL:-1} slots here; set them equal"
fi
if [[ $MODE == ollama && ${ollama_hosts[0]} =~ ^(127\.|\[::1\]|localhost) ]]; then
  log "warning: MODE=ollama with Ollama on loopback (OLLAMA_HOST=${ollama_hosts[0]}): nothing outside this container can reach it; set OLLAMA_HOST=0.0.0.0:11434"
fi
watch_file=$(mktemp)
trap 'rm -f "$watch_file"' EXIT

if ((count == 0)); then
  log "MODE=$MODE: no Ollama in this container (OLLAMA_GPUS=0); the server warms $model in the Ollamas of OLLAMA_HOSTS: ${remote_urls[*]}"
elif ((count == 1)); then
  log "MODE=$MODE: starting ollama serve (Ollama at ${ollama_urls[0]}, model $model)"
else
  placed=""
  for i in "${!ollama_urls[@]}"; do
    placed+="${placed:+, }${ollama_urls[i]}${ollama_gpus[i]:+ on GPU ${ollama_gpus[i]}}"
  done
  if ((OLLAMA_PER_GPU == 1)); then
    log "MODE=$MODE: starting $count ollama serve, one per GPU (model $model): $placed"
  else
    log "MODE=$MODE: starting $count ollama serve, $OLLAMA_PER_GPU per GPU (model $model): $placed"
  fi
fi
for i in "${!ollama_urls[@]}"; do
  start_ollama "$i"
done

if ((count > 0)); then
  started=$(now_us)
  wait_answering
  [[ -z $stop_signal ]] || finish_stop 0
  if ((count == 1)); then
    answers="Ollama answers"
  else
    answers="$count Ollamas answer"
  fi
  if [[ $MODE == ollama ]]; then
    log "$answers after $((($(now_us) - started) / 1000)) ms; the server in front warms $model"
  else
    log "$answers after $((($(now_us) - started) / 1000)) ms; warming $model"
    preload_all
    log "model $model is warm"
  fi
fi

if [[ $MODE == ollama ]]; then
  supervise # returns only by exiting: a stop signal, or an Ollama out of restarts
fi
child_name="python ${app[*]}"
log "starting $child_name"
start_child "${app[@]}"
supervise
[[ -z $stop_signal ]] || finish_stop "$next_status"
log "error: $child_name exited with status $next_status; stopping Ollama"
stop_watch
stop_ollamas "${!ollama_pids[@]}"
exit $((next_status == 0 ? 1 : next_status))
