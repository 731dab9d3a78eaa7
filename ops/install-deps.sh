#!/usr/bin/env bash
# Install the system packages t0dqm's tests and demo need (Debian/Ubuntu), only those missing, and make
# sure PostgreSQL is running. Idempotent; safe on a machine where everything is already there.
set -euo pipefail

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

need=()
command -v xrootd >/dev/null 2>&1 || need+=(xrootd-server)
command -v xrdcp >/dev/null 2>&1 || need+=(xrootd-client)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v pg_ctlcluster >/dev/null 2>&1 || need+=(postgresql)
command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)
command -v zip >/dev/null 2>&1 || need+=(zip)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)

if [ ${#need[@]} -gt 0 ]; then
  echo "install-deps: installing ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

# PostgreSQL must accept connections on 127.0.0.1:5432 (catalog tests).
if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  for version in $(ls /etc/postgresql 2>/dev/null); do
    $SUDO pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  done
  for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
fi
pg_isready -h 127.0.0.1 -p 5432
# Trust for local TCP connections as 'postgres' (the tests create and drop their own databases).
if ! psql -h 127.0.0.1 -U postgres -d postgres -c 'select 1' >/dev/null 2>&1; then
  $SUDO -u postgres psql -q -c "ALTER USER postgres PASSWORD 'postgres'" 2>/dev/null || \
    su postgres -c "psql -q -c \"ALTER USER postgres PASSWORD 'postgres'\""
  echo "install-deps: set a password for postgres; export T0DQM_TEST_PG=postgresql+psycopg2://postgres:postgres@127.0.0.1:5432/postgres"
fi
