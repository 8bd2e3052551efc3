#!/usr/bin/env bash
# The local Prefect stack of this project: a server (SQLite under a project-local PREFECT_HOME), the process work
# pool, the deployments of prefect.yaml, the automations of deploy/automations.yaml (a run whose process died is
# marked Crashed and started again) and one worker.
#
#   scripts/stack.sh up       start what is not running yet (idempotent), (re-)deploy, print the UI address
#   scripts/stack.sh status   what runs, where; exit 0 when server and worker are up, 3 otherwise
#   scripts/stack.sh down     stop exactly the processes `up` started (their process groups), nothing else
#
# Environment: PREFECT_PORT (4200), PREFECT_HOME (<project>/.prefect: database, pid files, logs/),
# FINETUNE_POOL (finetune-pool), STACK_TIMEOUT_S (180: how long `up` waits for the server's /api/health).
# Telemetry is off. Processes started by the worker (flow runs) run in their own sessions and are not stopped by
# `down`: cancel runs in flight from the UI first.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

export PREFECT_HOME=${PREFECT_HOME:-$ROOT/.prefect}
PREFECT=${PREFECT_BIN:-$ROOT/.venv/bin/prefect}
PYTHON=${PYTHON_BIN:-$ROOT/.venv/bin/python}
POOL=${FINETUNE_POOL:-finetune-pool}
TIMEOUT=${STACK_TIMEOUT_S:-180}
LOGS=$PREFECT_HOME/logs
STATE=$PREFECT_HOME/stack.env       # the port `up` used, so status/down find the same server
export PREFECT_SERVER_ANALYTICS_ENABLED=false DO_NOT_TRACK=1
export FINETUNE_PROJECT_DIR=$ROOT  # filled into the deployments' pull step (set_working_directory)

if [ -z "${PREFECT_PORT:-}" ] && [ -f "$STATE" ]; then
  PREFECT_PORT=$(sed -n 's/^PREFECT_PORT=//p' "$STATE")
fi
PORT=${PREFECT_PORT:-4200}
export PREFECT_API_URL=http://127.0.0.1:$PORT/api

healthy() { curl -fsS -m 5 "$PREFECT_API_URL/health" >/dev/null 2>&1; }

# alive NAME: true when the pid recorded for NAME runs and is still the process group we started (not a reused pid).
alive() {
  local file=$PREFECT_HOME/$1.pid pid pgid
  [ -f "$file" ] || return 1
  pid=$(cat "$file")
  pgid=$(ps -o pgid= -p "$pid" 2>/dev/null | tr -d ' ') || return 1
  [ "$pgid" = "$pid" ] && grep -q prefect "/proc/$pid/cmdline" 2>/dev/null
}

# start NAME CMD...: run CMD as the leader of a new session (so `down` can stop it and its children as a group).
start() {
  local name=$1; shift
  mkdir -p "$LOGS"
  setsid "$@" >>"$LOGS/$name.log" 2>&1 </dev/null &
  echo $! >"$PREFECT_HOME/$name.pid"
}

# stop NAME: SIGTERM to the recorded process group, SIGKILL after 20 s; only if it is ours and alive.
stop() {
  local name=$1 file=$PREFECT_HOME/$1.pid pid
  if alive "$name"; then
    pid=$(cat "$file")
    echo "==> stopping $name (process group $pid)"
    kill -TERM -- "-$pid" 2>/dev/null || true
    for _ in $(seq 40); do
      kill -0 -- "-$pid" 2>/dev/null || break
      sleep 0.5
    done
    kill -KILL -- "-$pid" 2>/dev/null || true
  fi
  rm -f "$file"
}

up() {
  mkdir -p "$PREFECT_HOME" "$LOGS"
  if alive server; then
    echo "==> server already running (pid $(cat "$PREFECT_HOME/server.pid"), port $PORT)"
  else
    if healthy; then
      echo "port $PORT already serves a Prefect API that this script did not start; set PREFECT_PORT" >&2
      exit 1
    fi
    echo "==> starting the Prefect server on 127.0.0.1:$PORT (PREFECT_HOME=$PREFECT_HOME)"
    start server "$PREFECT" server start --host 127.0.0.1 --port "$PORT"
    echo "PREFECT_PORT=$PORT" >"$STATE"
  fi
  local waited=0
  until healthy; do
    if ! alive server; then
      echo "the server exited; last lines of $LOGS/server.log:" >&2
      tail -n 30 "$LOGS/server.log" >&2
      exit 1
    fi
    if [ "$waited" -ge "$TIMEOUT" ]; then
      echo "the server did not answer $PREFECT_API_URL/health within ${TIMEOUT}s; see $LOGS/server.log" >&2
      exit 1
    fi
    sleep 1
    waited=$((waited + 1))
  done
  echo "==> server healthy"
  "$PREFECT" --no-prompt work-pool create "$POOL" --type process --overwrite >>"$LOGS/deploy.log" 2>&1
  echo "==> deploying prefect.yaml to pool $POOL"
  if ! "$PREFECT" --no-prompt deploy --all >>"$LOGS/deploy.log" 2>&1; then
    echo "deploy failed; last lines of $LOGS/deploy.log:" >&2
    tail -n 30 "$LOGS/deploy.log" >&2
    exit 1
  fi
  echo "==> automations of deploy/automations.yaml (crashed-run detection and re-run)"
  if ! "$PYTHON" -m flows.automations "$ROOT/deploy/automations.yaml" >>"$LOGS/deploy.log" 2>&1; then
    echo "creating the automations failed; last lines of $LOGS/deploy.log:" >&2
    tail -n 30 "$LOGS/deploy.log" >&2
    exit 1
  fi
  if alive worker; then
    echo "==> worker already running (pid $(cat "$PREFECT_HOME/worker.pid"))"
  else
    echo "==> starting a worker for pool $POOL"
    start worker "$PREFECT" worker start --pool "$POOL" --name "finetune-worker-$PORT"
  fi
  cat <<EOF

UI:        http://127.0.0.1:$PORT
API:       export PREFECT_API_URL=$PREFECT_API_URL
Run:       PREFECT_API_URL=$PREFECT_API_URL $PREFECT deployment run finetune/regulator-cpu
           PREFECT_API_URL=$PREFECT_API_URL $PREFECT deployment run finetune/regulator   (8 GPUs declared)
Logs:      $LOGS
Stop:      scripts/stack.sh down
EOF
}

status() {
  local rc=0
  if alive server; then
    echo "server: pid $(cat "$PREFECT_HOME/server.pid"), $(healthy && echo healthy || echo 'not answering') at $PREFECT_API_URL"
  else
    echo "server: not running"; rc=3
  fi
  if alive worker; then
    echo "worker: pid $(cat "$PREFECT_HOME/worker.pid"), pool $POOL"
  else
    echo "worker: not running"; rc=3
  fi
  [ "$rc" = 0 ] && echo "UI: http://127.0.0.1:$PORT"
  return "$rc"
}

down() {
  stop worker
  stop server
  echo "==> stack stopped"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
