#!/bin/sh
# Cairn's container entrypoint: one image, every role.
#   web                 the team web process (cairn_web), CAIRN_WEB_WORKERS processes on :8000
#   worker POOL         a Celery worker pool: ingest | index | inference | beat (cairn_worker)
#   migrate             apply database migrations (the Compose `migrate` service, the Kubernetes Job)
#   personal            personal mode in one process (cairn_serve; migrates itself)
#   check               the start-up check alone: settings load, Django's system checks pass
#   manage ARGS…        any manage.py command (cairn_apikey, createsuperuser, cairn_audit_verify…)
# Every role but `manage` runs the start-up check first, so a bad setting stops the container
# with one line naming the variable instead of a crash loop further in.
set -eu
app="${CAIRN_APP_DIR:-/opt/cairn/app}"
python="${CAIRN_PYTHON:-python}"
cd "$app"
# Tokenizers' own thread pool would fight Celery's processes for the cores.
export TOKENIZERS_PARALLELISM="${TOKENIZERS_PARALLELISM:-false}"

startup_check() {
  "$python" manage.py check --fail-level ERROR >/dev/null
}

role="${1:-web}"
[ "$#" -gt 0 ] && shift
case "$role" in
  web)
    startup_check
    exec "$python" manage.py cairn_web --host 0.0.0.0 --port "${CAIRN_PORT:-8000}" \
      --workers "${CAIRN_WEB_WORKERS:-2}" "$@" ;;
  worker)
    startup_check
    exec "$python" manage.py cairn_worker "$@" ;;
  migrate)
    startup_check
    exec "$python" manage.py migrate --noinput "$@" ;;
  personal)
    startup_check
    exec "$python" manage.py cairn_serve --host 0.0.0.0 --port "${CAIRN_PORT:-8000}" "$@" ;;
  check)
    startup_check
    echo "cairn: configuration ok" ;;
  manage)
    exec "$python" manage.py "$@" ;;
  *)
    exec "$@" ;;
esac
