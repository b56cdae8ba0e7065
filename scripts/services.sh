#!/usr/bin/env bash
# Starts the local PostgreSQL and MariaDB servers the tests use, if they are installed but down.
# Tests skip (with the reason) when a server is absent; CI has both.
set -uo pipefail
if command -v pg_ctlcluster >/dev/null 2>&1 && ! pg_isready -h 127.0.0.1 -q 2>/dev/null; then
  for version in $(ls /etc/postgresql 2>/dev/null); do
    pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  done
fi
if command -v mariadbd >/dev/null 2>&1 && ! mariadb-admin -h 127.0.0.1 -u root ping >/dev/null 2>&1; then
  start-stop-daemon --start --oknodo --background --exec "$(command -v mariadbd)" || true
fi
for _ in $(seq 1 30); do
  pg_ok=1; my_ok=1
  command -v pg_isready >/dev/null 2>&1 && { pg_isready -h 127.0.0.1 -q || pg_ok=0; }
  command -v mariadb-admin >/dev/null 2>&1 && { mariadb-admin -h 127.0.0.1 -u root ping >/dev/null 2>&1 || my_ok=0; }
  [ "$pg_ok" = 1 ] && [ "$my_ok" = 1 ] && break
  sleep 1
done
pg_isready -h 127.0.0.1 2>/dev/null || echo "PostgreSQL is not reachable: its tests will be skipped"
mariadb-admin -h 127.0.0.1 -u root ping 2>/dev/null || echo "MariaDB is not reachable: its tests will be skipped"
# Redis on 127.0.0.1:6379: the Celery broker of the distributed tests (skipped without it).
if command -v redis-server >/dev/null 2>&1 && ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log || true
  for _ in $(seq 1 20); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 0.5; done
fi
redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 || echo "Redis is not reachable: the Celery tests will be skipped"
exit 0
