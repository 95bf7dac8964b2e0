#!/usr/bin/env bash
# RabbitMQ and PostgreSQL on 127.0.0.1 for `make run`, `make test` and CI.
#
# Installs Debian's `rabbitmq-server` and `postgresql` when they are missing, starts them
# when they are down, enables RabbitMQ's management and Prometheus plugins, and lets the
# `postgres` role in over loopback without a password (the tests' DSN), with a `test`
# database. Idempotent: on a machine where all of that holds already it only checks.
# A development and CI machine's set-up, not a production one: see docs/deploy.md.
set -euo pipefail

RABBITMQ_PLUGINS=(rabbitmq_management rabbitmq_prometheus)
POSTGRES_DATABASE=test
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo

say() { echo "services: $*"; }

port_open() { (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for_port() {
  for _ in $(seq 1 90); do port_open "$1" && return 0; sleep 1; done
  echo "services: nothing answers on 127.0.0.1:$1 after 90 s" >&2
  return 1
}

apt_updated=no
apt_install() {
  say "installing the Debian package(s) $*"
  if [ "$apt_updated" = no ]; then $SUDO apt-get update -qq; apt_updated=yes; fi
  # policy-rc.d-less containers have no init system: the package's own start may fail,
  # so we start the service ourselves below.
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

rabbitmq() {
  command -v rabbitmq-server >/dev/null 2>&1 || apt_install rabbitmq-server
  if ! port_open 5672; then
    # Enabled before the start, so the node boots with them and needs no restart.
    $SUDO rabbitmq-plugins -q --offline enable "${RABBITMQ_PLUGINS[@]}" >/dev/null
    say "starting RabbitMQ"
    $SUDO rabbitmq-server -detached
    wait_for_port 5672
  fi
  $SUDO rabbitmqctl -q await_startup
  local enabled
  enabled=$($SUDO rabbitmq-plugins list -e -m 2>/dev/null)
  for plugin in "${RABBITMQ_PLUGINS[@]}"; do
    grep -qx "$plugin" <<<"$enabled" || $SUDO rabbitmq-plugins -q enable "$plugin" >/dev/null
  done
  wait_for_port 15672
  wait_for_port 15692
}

as_postgres() { $SUDO runuser -u postgres -- "$@"; }

postgres_version() { ls /usr/lib/postgresql | sort -V | tail -1; }

postgresql() {
  command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /usr/lib/postgresql ] || apt_install postgresql
  local version
  version=$(postgres_version)
  if ! port_open 5432; then
    if [ ! -d "/etc/postgresql/$version/main" ]; then
      say "creating the PostgreSQL $version cluster 'main'"
      $SUDO pg_createcluster "$version" main --port 5432 >/dev/null
    fi
    say "starting PostgreSQL $version"
    $SUDO pg_ctlcluster --skip-systemctl-redirect "$version" main start
    wait_for_port 5432
  fi
  if ! psql -w -h 127.0.0.1 -U postgres -d postgres -Atqc 'select 1' >/dev/null 2>&1; then
    local hba
    hba=$(as_postgres psql -Atqc 'show hba_file')
    say "letting the postgres role in over loopback without a password ($hba)"
    # First match wins in pg_hba.conf, so these go on top; loopback addresses only.
    $SUDO sed -i '1i host all postgres 127.0.0.1/32 trust  # conveyor: local dev/CI\nhost all postgres ::1/128 trust  # conveyor: local dev/CI' "$hba"
    as_postgres psql -Atqc 'select pg_reload_conf()' >/dev/null
    psql -w -h 127.0.0.1 -U postgres -d postgres -Atqc 'select 1' >/dev/null
  fi
  if [ -z "$(psql -w -h 127.0.0.1 -U postgres -d postgres -Atqc \
    "select 1 from pg_database where datname = '$POSTGRES_DATABASE'")" ]; then
    say "creating the database $POSTGRES_DATABASE"
    psql -w -h 127.0.0.1 -U postgres -d postgres -qc "create database $POSTGRES_DATABASE" >/dev/null
  fi
}

case "${1:-all}" in
  rabbitmq) rabbitmq ;;
  postgresql) postgresql ;;
  all) rabbitmq; postgresql ;;
  *) echo "usage: $0 [all|rabbitmq|postgresql]" >&2; exit 2 ;;
esac
say "RabbitMQ on 127.0.0.1:5672 (management :15672, metrics :15692), PostgreSQL on 127.0.0.1:5432: up"
