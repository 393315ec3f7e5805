#!/usr/bin/env bash
# The image's entrypoint. It starts `ollama serve`, waits until Ollama answers, warms the
# model with the server's own load-time options (`python -m server preload`), then runs
# the Python process that MODE names and supervises both children:
#
#   MODE=server      python -m server   (RunPod pod or load-balancing endpoint; the default)
#   MODE=serverless  python handler.py  (RunPod queue endpoint worker)
#
# - SIGTERM or SIGINT: the Python process gets SIGTERM first (background children of a
#   script ignore SIGINT); once it has drained its in-flight turns and exited, Ollama gets
#   SIGTERM. Exit status 0 when the Python process stopped cleanly.
# - If either child exits on its own, the other is stopped and the container exits non-zero.
# - Startup failures exit 1 with a line saying why (except a failed preload in serverless
#   mode: the worker starts anyway and fails jobs with the reason); bad settings exit 2
#   before anything starts.
#
# Settings (environment): MODE, APP_DIR (where server/ and handler.py are), PYTHON (the
# interpreter), OLLAMA_START_TIMEOUT, PRELOAD_TIMEOUT, OLLAMA_STOP_TIMEOUT (seconds).
# Everything else (OLLAMA_HOST, MODEL, PORT, NUM_CTX...) passes through to Ollama and to
# the server, which read it themselves.
set -euo pipefail

APP_DIR=${APP_DIR:-/app}
PYTHON=${PYTHON:-/opt/venv/bin/python}
MODE=${MODE:-server}
OLLAMA_START_TIMEOUT=${OLLAMA_START_TIMEOUT:-60}
PRELOAD_TIMEOUT=${PRELOAD_TIMEOUT:-300}
OLLAMA_STOP_TIMEOUT=${OLLAMA_STOP_TIMEOUT:-10}

ollama_pid=""  # `ollama serve`
child_pid=""   # the Python process of the current step: the preload, then the server/handler
child_name=""
child_status=0 # set when the Python child exits
reaped_status=0
stop_signal="" # TERM or INT, once one has arrived

log() {
  printf 'entrypoint: %s\n' "$*" >&2
}

# Microseconds since the epoch.
now_us() {
  local now=${EPOCHREALTIME//[!0-9]/}
  printf '%s' "$((10#$now))"
}

# Wait until the child $1 has exited, whatever signals arrive meanwhile; its exit status
# goes to reaped_status.
reap() {
  local finished status
  while :; do
    status=0
    wait -n -p finished "$1" || status=$?
    # 127: not (or no longer) a child of this shell.
    if [[ -n ${finished:-} || $status == 127 ]]; then
      reaped_status=$status
      return 0
    fi
  done
}

# Wait up to $2 seconds for the child $1 to exit; true if it did.
wait_exit() {
  local pid=$1 timer finished status
  sleep "$2" &
  timer=$!
  while :; do
    status=0
    wait -n -p finished "$pid" "$timer" || status=$?
    if [[ ${finished:-} == "$pid" || (-z ${finished:-} && $status == 127) ]]; then
      kill "$timer" 2>/dev/null || true
      reap "$timer"
      return 0
    fi
    [[ ${finished:-} != "$timer" ]] || return 1
    # Interrupted by a signal (its trap has run): keep waiting.
  done
}

# Stop Ollama: SIGTERM, then SIGKILL after OLLAMA_STOP_TIMEOUT seconds.
stop_ollama() {
  [[ -n $ollama_pid ]] || return 0
  local pid=$ollama_pid
  ollama_pid=""
  kill -s TERM "$pid" 2>/dev/null || true
  if ! wait_exit "$pid" "$OLLAMA_STOP_TIMEOUT"; then
    log "ollama serve did not stop within $OLLAMA_STOP_TIMEOUT s (OLLAMA_STOP_TIMEOUT); killing it"
    kill -s KILL "$pid" 2>/dev/null || true
    reap "$pid"
  fi
}

# Log an error, stop whatever runs and exit with status $1.
fail() {
  log "error: $2"
  if [[ -n $child_pid ]]; then
    kill -s TERM "$child_pid" 2>/dev/null || true
    reap "$child_pid"
    child_pid=""
  fi
  stop_ollama
  exit "$1"
}

# Called by the TERM and INT traps.
# shellcheck disable=SC2329
on_signal() {
  if [[ -z $stop_signal ]]; then
    stop_signal=$1
    if [[ -n $child_pid ]]; then
      log "SIG$1 received: stopping $child_name, then Ollama"
    else
      log "SIG$1 received: stopping"
    fi
  fi
  if [[ -n $child_pid ]]; then
    kill -s TERM "$child_pid" 2>/dev/null || true
  fi
}

# After a stop signal, once the Python child (if any) has exited with status $1: stop
# Ollama and exit.
finish_stop() {
  stop_ollama
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

# Start the Python child: "$PYTHON" "$@", named child_name.
start_child() {
  "$PYTHON" "$@" &
  child_pid=$!
  # A signal that arrived before child_pid was set has not been forwarded yet.
  if [[ -n $stop_signal ]]; then
    kill -s TERM "$child_pid" 2>/dev/null || true
  fi
}

# Wait until the Python child exits, setting child_status. If Ollama exits first, stop the
# child and end the container; signals are forwarded by their trap and the wait goes on.
wait_child() {
  local finished status
  while :; do
    status=0
    if [[ -n $ollama_pid ]]; then
      wait -n -p finished "$child_pid" "$ollama_pid" || status=$?
    else
      wait -n -p finished "$child_pid" || status=$?
    fi
    if [[ ${finished:-} == "$child_pid" || (-z ${finished:-} && $status == 127) ]]; then
      child_pid=""
      child_status=$status
      return 0
    fi
    if [[ -n $ollama_pid && ${finished:-} == "$ollama_pid" ]]; then
      ollama_pid=""
      # While stopping, Ollama may go first (a terminal's Ctrl-C reaches every process).
      if [[ -z $stop_signal ]]; then
        fail 1 "ollama serve exited with status $status; stopping $child_name"
      fi
    fi
  done
}

trap 'on_signal TERM' TERM
trap 'on_signal INT' INT

case $MODE in
  server) app=(-m server) ;;
  serverless) app=(handler.py) ;;
  *) fail 2 "MODE=$MODE is neither 'server' nor 'serverless'" ;;
esac
if (($# > 0)); then
  fail 2 "no arguments are taken (got: $*); configure with environment variables"
fi
for setting in OLLAMA_START_TIMEOUT PRELOAD_TIMEOUT OLLAMA_STOP_TIMEOUT; do
  if [[ ! ${!setting} =~ ^[1-9][0-9]{0,5}$ ]]; then
    fail 2 "$setting=${!setting} is not a whole number of seconds above zero"
  fi
done
[[ -x $PYTHON ]] || fail 2 "PYTHON=$PYTHON is not an executable"
cd "$APP_DIR" 2>/dev/null || fail 2 "APP_DIR=$APP_DIR is not a directory"

# The server's own configuration gives the Ollama URL and model it will use, and reports
# an invalid setting now, before anything starts.
if ! settings=$("$PYTHON" -c '
import sys
from server.config import ConfigError, parse_config
try:
    config = parse_config([])
except ConfigError as exc:
    sys.exit(str(exc))
print(config.ollama_url, config.model)
' 2>&1); then
  fail 2 "invalid settings: $settings"
fi
read -r ollama_url model <<<"${settings##*$'\n'}"

log "MODE=$MODE: starting ollama serve (Ollama at $ollama_url, model $model)"
ollama serve &
ollama_pid=$!

started=$(now_us)
deadline=$((started + OLLAMA_START_TIMEOUT * 1000000))
until "$PYTHON" -I -c '
import sys, urllib.request
urllib.request.urlopen(sys.argv[1] + "/api/version", timeout=2).close()
' "$ollama_url" 2>/dev/null; do
  [[ -z $stop_signal ]] || finish_stop 0
  if ! kill -0 "$ollama_pid" 2>/dev/null; then
    reap "$ollama_pid"
    ollama_pid=""
    fail 1 "ollama serve exited with status $reaped_status before answering at $ollama_url"
  fi
  if (($(now_us) >= deadline)); then
    fail 1 "Ollama did not answer at $ollama_url within $OLLAMA_START_TIMEOUT s (OLLAMA_START_TIMEOUT)"
  fi
  sleep 0.2
done
[[ -z $stop_signal ]] || finish_stop 0
log "Ollama answers after $((($(now_us) - started) / 1000)) ms; warming $model"

child_name="python -m server preload"
start_child -m server preload --wait "$PRELOAD_TIMEOUT"
wait_child
[[ -z $stop_signal ]] || finish_stop "$child_status"
if ((child_status != 0)); then
  if [[ $MODE != serverless ]]; then
    fail 1 "model $model did not get warm within $PRELOAD_TIMEOUT s (PRELOAD_TIMEOUT)"
  fi
  # A serverless worker that exits is restarted over and over; instead the worker
  # starts, keeps trying to warm the model, and fails each job with the reason.
  log "warning: model $model did not get warm within $PRELOAD_TIMEOUT s; starting the worker anyway"
else
  log "model $model is warm"
fi

child_name="python ${app[*]}"
log "starting $child_name"
start_child "${app[@]}"
wait_child
[[ -z $stop_signal ]] || finish_stop "$child_status"
log "error: $child_name exited with status $child_status; stopping Ollama"
stop_ollama
exit $((child_status == 0 ? 1 : child_status))
