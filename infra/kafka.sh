#!/usr/bin/env bash
# Run a real single-node Apache Kafka broker natively (KRaft, combined broker+controller), no Docker.
#
#   infra/kafka.sh install   fetch the pinned Kafka jars from Maven Central (once)
#   infra/kafka.sh start     install if needed, configure, format once, start, wait until ready
#   infra/kafka.sh stop      SIGTERM, wait, then SIGKILL
#   infra/kafka.sh status    print running/stopped (exit 0 if running, 3 if stopped)
#   infra/kafka.sh kill      SIGKILL at once (crash simulation)
#   infra/kafka.sh wait      wait until the running broker is ready
#
# Environment:
#   KEEL_DATA_DIR                 data root (default: <repo>/var)
#   KEEL_KAFKA_PORT               client listener port, SASL_PLAINTEXT + SCRAM-SHA-512 (default: 9092)
#   KEEL_KAFKA_CONTROLLER_PORT    KRaft controller listener port (default: 9093)
#   KEEL_KAFKA_ADMIN_PORT         loopback admin door, PLAINTEXT, super user (default: client port + 2)
#   KEEL_KAFKA_ADMIN_USER         SCRAM super user created at format time (default: keel-admin)
#   KEEL_KAFKA_ADMIN_PASSWORD     its password (default: keel-admin-dev-password)
#   KEEL_KAFKA_START_TIMEOUT      seconds to wait for readiness (default: 60)
#   KEEL_KAFKA_STOP_TIMEOUT       seconds to wait after SIGTERM before SIGKILL (default: 30)
#   KEEL_KAFKA_HEAP_OPTS          JVM heap options (default: -Xmx512m -Xms256m)
#   KEEL_KAFKA_JVM_OPTS           extra JVM options (default: none)
#   JAVA_HOME                     Java 17+ to use (default: java on PATH)
#
# Layout:
#   $KEEL_DATA_DIR/kafka-<version>/lib/      jars (shared by every broker using this data root)
#   $KEEL_DATA_DIR/kafka/data/               KRaft metadata and topic logs
#   $KEEL_DATA_DIR/kafka/server.properties   generated on every start
#   $KEEL_DATA_DIR/kafka/kafka.log           broker output (previous run in kafka.log.1)
#   $KEEL_DATA_DIR/kafka/kafka.pid
#   $KEEL_DATA_DIR/kafka/cluster.id
#
# Security: the client port authenticates with SASL/SCRAM-SHA-512 and the StandardAuthorizer allows only
# what an ACL grants (allow.everyone.if.no.acl.found=false): every service connects there as its own
# principal, with the grants of libs/keel/acl.py (`keel acl --apply` creates the users and ACLs).
# The admin door is a PLAINTEXT listener bound to 127.0.0.1 whose principal (User:ANONYMOUS) is a super
# user: it is how the local operator tooling and the tests create topics, users and ACLs, and how the
# broker reaches itself. It is for development and tests on one machine only; docker-compose.yml has no
# such listener.
#
# docker-compose.yml at the repository root describes the same broker as a container.
set -euo pipefail

KAFKA_VERSION=4.3.1

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(dirname "$SCRIPT_DIR")"
POM="$SCRIPT_DIR/kafka/pom.xml"
LOG4J_CONFIG="$SCRIPT_DIR/kafka/log4j2.properties"

DATA_ROOT="${KEEL_DATA_DIR:-$REPO_ROOT/var}"
PORT="${KEEL_KAFKA_PORT:-9092}"
CONTROLLER_PORT="${KEEL_KAFKA_CONTROLLER_PORT:-9093}"
ADMIN_PORT="${KEEL_KAFKA_ADMIN_PORT:-$((PORT + 2))}"
ADMIN_USER="${KEEL_KAFKA_ADMIN_USER:-keel-admin}"
ADMIN_PASSWORD="${KEEL_KAFKA_ADMIN_PASSWORD:-keel-admin-dev-password}"
START_TIMEOUT="${KEEL_KAFKA_START_TIMEOUT:-60}"
STOP_TIMEOUT="${KEEL_KAFKA_STOP_TIMEOUT:-30}"
HEAP_OPTS="${KEEL_KAFKA_HEAP_OPTS:--Xmx512m -Xms256m}"
EXTRA_JVM_OPTS="${KEEL_KAFKA_JVM_OPTS:-}"

if [[ -n "${JAVA_HOME:-}" && -x "$JAVA_HOME/bin/java" ]]; then
  JAVA="$JAVA_HOME/bin/java"
else
  JAVA=java
fi

READY_MARKER="Kafka Server started"

die() {
  echo "keel: $*" >&2
  exit 1
}

usage() {
  cat >&2 <<EOF
usage: $(basename "$0") {install|start|stop|status|kill|wait}

  install   fetch Apache Kafka $KAFKA_VERSION from Maven Central (no-op when present)
  start     install if needed, then start the broker and wait until it is ready
  stop      stop the broker (SIGTERM, then SIGKILL after ${STOP_TIMEOUT}s)
  status    print whether the broker runs (exit 0 if running, 3 if stopped)
  kill      kill the broker with SIGKILL (crash simulation)
  wait      wait until the running broker is ready (up to ${START_TIMEOUT}s)

environment: KEEL_DATA_DIR (default <repo>/var), KEEL_KAFKA_PORT (default 9092),
             KEEL_KAFKA_CONTROLLER_PORT (default 9093), KEEL_KAFKA_ADMIN_PORT (default port + 2),
             KEEL_KAFKA_ADMIN_USER, KEEL_KAFKA_ADMIN_PASSWORD, KEEL_KAFKA_START_TIMEOUT,
             KEEL_KAFKA_STOP_TIMEOUT, KEEL_KAFKA_HEAP_OPTS, KEEL_KAFKA_JVM_OPTS
EOF
  exit 2
}

is_uint() {
  [[ "$1" =~ ^[0-9]+$ ]]
}

validate_env() {
  is_uint "$PORT" || die "KEEL_KAFKA_PORT must be a port number, got '$PORT'"
  is_uint "$CONTROLLER_PORT" || die "KEEL_KAFKA_CONTROLLER_PORT must be a port number, got '$CONTROLLER_PORT'"
  is_uint "$ADMIN_PORT" || die "KEEL_KAFKA_ADMIN_PORT must be a port number, got '$ADMIN_PORT'"
  [[ "$PORT" != "$CONTROLLER_PORT" ]] || die "KEEL_KAFKA_PORT and KEEL_KAFKA_CONTROLLER_PORT must differ"
  [[ "$ADMIN_PORT" != "$PORT" && "$ADMIN_PORT" != "$CONTROLLER_PORT" ]] ||
    die "KEEL_KAFKA_ADMIN_PORT must differ from the client and controller ports"
  [[ "$ADMIN_USER" =~ ^[A-Za-z0-9._-]+$ ]] || die "KEEL_KAFKA_ADMIN_USER: letters, digits, '.', '_', '-' only"
  [[ "$ADMIN_PASSWORD" =~ ^[A-Za-z0-9._-]+$ ]] ||
    die "KEEL_KAFKA_ADMIN_PASSWORD: letters, digits, '.', '_', '-' only"
  is_uint "$START_TIMEOUT" || die "KEEL_KAFKA_START_TIMEOUT must be whole seconds, got '$START_TIMEOUT'"
  is_uint "$STOP_TIMEOUT" || die "KEEL_KAFKA_STOP_TIMEOUT must be whole seconds, got '$STOP_TIMEOUT'"
}

# Resolve paths once the data root exists, so that the pid check below can match the absolute
# path of server.properties in the broker's command line.
init_paths() {
  mkdir -p "$DATA_ROOT"
  DATA_ROOT="$(cd "$DATA_ROOT" && pwd)"
  INSTALL_DIR="$DATA_ROOT/kafka-$KAFKA_VERSION"
  LIB_DIR="$INSTALL_DIR/lib"
  INSTALL_MARKER="$INSTALL_DIR/.installed"
  KAFKA_DIR="$DATA_ROOT/kafka"
  LOG_DIRS="$KAFKA_DIR/data"
  CONFIG="$KAFKA_DIR/server.properties"
  LOG_FILE="$KAFKA_DIR/kafka.log"
  PID_FILE="$KAFKA_DIR/kafka.pid"
  CLUSTER_ID_FILE="$KAFKA_DIR/cluster.id"
  LOCK_FILE="$KAFKA_DIR/.lock"
  mkdir -p "$KAFKA_DIR"
}

# Serialise start/stop/kill of one data dir (e.g. parallel test workers). File descriptor 9 is
# closed for the broker itself so that it never holds the lock.
take_lock() {
  if command -v flock >/dev/null 2>&1; then
    exec 9>"$LOCK_FILE"
    flock 9
  fi
}

# ---------------------------------------------------------------------------------------------
# install

# The marker records the version and the pom's checksum: changing the pom reinstalls.
install_stamp() {
  local sum
  sum="$(sha256sum "$POM" | cut -d' ' -f1)"
  echo "kafka=$KAFKA_VERSION pom-sha256=$sum"
}

is_installed() {
  [[ -f "$INSTALL_MARKER" && -f "$LIB_DIR/kafka_2.13-$KAFKA_VERSION.jar" ]] &&
    [[ "$(cat "$INSTALL_MARKER")" == "$(install_stamp)" ]]
}

# Maven itself, when the machine has none: the pinned binary distribution from Maven Central,
# checked against the SHA-512 pinned here. Cached under KEEL_CACHE_DIR across clones.
MAVEN_VERSION=3.9.11
MAVEN_SHA512=bcfe4fe305c962ace56ac7b5fc7a08b87d5abd8b7e89027ab251069faebee516b0ded8961445d6d91ec1985dfe30f8153268843c89aa392733d1a3ec956c9978
ensure_maven() {
  if command -v mvn >/dev/null 2>&1; then
    command -v mvn
    return 0
  fi
  local cache="${KEEL_CACHE_DIR:-$HOME/.cache/keel}" home
  home="$cache/apache-maven-$MAVEN_VERSION"
  if [[ ! -x "$home/bin/mvn" ]]; then
    echo "keel: no mvn on this machine: fetching Apache Maven $MAVEN_VERSION from Maven Central ..." >&2
    mkdir -p "$cache"
    local tgz="$cache/apache-maven-$MAVEN_VERSION-bin.tar.gz"
    curl -fsSL -o "$tgz" \
      "https://repo.maven.apache.org/maven2/org/apache/maven/apache-maven/$MAVEN_VERSION/apache-maven-$MAVEN_VERSION-bin.tar.gz" ||
      die "downloading Apache Maven failed"
    echo "$MAVEN_SHA512  $tgz" | sha512sum -c --quiet - >&2 || {
      rm -f "$tgz"
      die "Apache Maven download does not match its pinned SHA-512"
    }
    tar -xzf "$tgz" -C "$cache" && rm -f "$tgz"
  fi
  echo "$home/bin/mvn"
}

install_kafka() {
  local verbose="${1:-}"
  if is_installed; then
    if [[ -n "$verbose" ]]; then
      echo "kafka $KAFKA_VERSION already installed"
    fi
    return 0
  fi
  local mvn
  mvn="$(ensure_maven)"
  echo "keel: installing Apache Kafka $KAFKA_VERSION from Maven Central into $LIB_DIR ..."
  mkdir -p "$INSTALL_DIR"
  local tmp started=$SECONDS
  tmp="$(mktemp -d "$INSTALL_DIR/lib.tmp.XXXXXX")"
  # Maven's local repository (~/.m2) caches the downloads across clones and data dirs.
  # --strict-checksums fails the build when a downloaded artifact does not match the checksum
  # published beside it on the repository (the integrity check of what is downloaded).
  # Maven's output goes to a file (with -q it holds only errors, plus stray colour codes from
  # Maven 3.8) and is shown on failure.
  if ! "$mvn" -B -q --strict-checksums -f "$POM" \
    dependency:copy-dependencies -DoutputDirectory="$tmp" >"$INSTALL_DIR/mvn.log" 2>&1 </dev/null; then
    rm -rf "$tmp"
    sed -e 's/\x1b\[[0-9;]*m//g' "$INSTALL_DIR/mvn.log" >&2
    die "installing Kafka $KAFKA_VERSION with Maven failed (see $INSTALL_DIR/mvn.log)"
  fi
  [[ -f "$tmp/kafka_2.13-$KAFKA_VERSION.jar" ]] || {
    rm -rf "$tmp"
    die "Maven did not produce kafka_2.13-$KAFKA_VERSION.jar"
  }
  rm -rf "$LIB_DIR" "$INSTALL_MARKER"
  mv "$tmp" "$LIB_DIR"
  install_stamp >"$INSTALL_MARKER"
  echo "keel: installed Apache Kafka $KAFKA_VERSION ($(find "$LIB_DIR" -name '*.jar' | wc -l) jars, $((SECONDS - started))s)"
}

# ---------------------------------------------------------------------------------------------
# process helpers

read_pid() {
  local pid=""
  if [[ -f "$PID_FILE" ]]; then
    pid="$(tr -dc '0-9' <"$PID_FILE")"
  fi
  echo "$pid"
}

# True when the pid is alive and is our broker (guards against a recycled pid).
pid_is_broker() {
  local pid="$1" cmdline
  [[ -n "$pid" ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  if [[ -r "/proc/$pid/cmdline" ]]; then
    cmdline="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)"
  else
    cmdline="$(ps -p "$pid" -o args= 2>/dev/null || true)"
  fi
  [[ "$cmdline" == *kafka.Kafka* && "$cmdline" == *"$CONFIG"* ]]
}

running_pid() {
  local pid
  pid="$(read_pid)"
  if pid_is_broker "$pid"; then
    echo "$pid"
  fi
}

port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

log_tail() {
  if [[ -f "$LOG_FILE" ]]; then
    echo "---- last lines of $LOG_FILE ----" >&2
    tail -n "${1:-40}" "$LOG_FILE" >&2
    echo "----" >&2
  fi
}

# ---------------------------------------------------------------------------------------------
# configuration

cluster_id() {
  local id
  if [[ -s "$CLUSTER_ID_FILE" ]]; then
    cat "$CLUSTER_ID_FILE"
    return 0
  fi
  # 16 random bytes, unpadded base64url (22 chars), as kafka-storage random-uuid makes. A leading
  # '-' would read as an option on the command line, so draw again.
  while :; do
    id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')"
    [[ "$id" == -* ]] || break
  done
  echo "$id" >"$CLUSTER_ID_FILE"
  echo "$id"
}

# Regenerated on each start so that port changes take effect. No trailing comments on value
# lines: in .properties a "# ..." after a value becomes part of the value.
write_config() {
  cat >"$CONFIG" <<EOF
# Generated by infra/kafka.sh on every start; edits are overwritten.

# Single node, KRaft, combined broker + controller with a dynamic (standalone) quorum.
process.roles=broker,controller
node.id=1
# CLIENT: every service, as its own principal (SASL/SCRAM-SHA-512). ADMIN: the loopback admin door of
# the local operator tooling and the tests (dev/test only), also the broker's way to itself.
listeners=CLIENT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CONTROLLER_PORT,ADMIN://127.0.0.1:$ADMIN_PORT
advertised.listeners=CLIENT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CONTROLLER_PORT,ADMIN://127.0.0.1:$ADMIN_PORT
listener.security.protocol.map=CLIENT:SASL_PLAINTEXT,CONTROLLER:PLAINTEXT,ADMIN:PLAINTEXT
inter.broker.listener.name=ADMIN
controller.listener.names=CONTROLLER
controller.quorum.bootstrap.servers=127.0.0.1:$CONTROLLER_PORT
sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.client.sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.client.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;

# Nothing is allowed that no ACL grants (libs/keel/acl.py). The super users: the SCRAM admin created at
# format time, and ANONYMOUS, the principal of the PLAINTEXT listeners, both bound to 127.0.0.1 (the
# controller's, and the admin door).
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=false
super.users=User:$ADMIN_USER;User:ANONYMOUS

log.dirs=$LOG_DIRS

# Topics are created explicitly, never by a typo in a producer.
auto.create.topics.enable=false
num.partitions=1
default.replication.factor=1
min.insync.replicas=1

# Internal topics: one replica (a single node could never meet a higher factor, and the share
# coordinator would loop on INVALID_REPLICATION_FACTOR), few partitions for a fast start.
# __consumer_offsets has no min ISR setting of its own: it follows min.insync.replicas above.
offsets.topic.replication.factor=1
offsets.topic.num.partitions=5
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=5
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
share.coordinator.state.topic.num.partitions=5

# Consumer groups form at once instead of after the default 3 s delay.
group.initial.rebalance.delay.ms=0

# Groups on the KIP-848 consumer protocol (KEEL_GROUP_PROTOCOL=consumer) have their session timed by
# the broker (default 45 s, also its minimum): a member killed with kill -9 holds its partitions, and
# a static member restarted under its instance id is refused (UNRELEASED_INSTANCE_ID), that long. The
# same 6 s the classic groups ask for.
group.consumer.min.session.timeout.ms=6000
group.consumer.session.timeout.ms=6000
group.consumer.min.heartbeat.interval.ms=1000
group.consumer.heartbeat.interval.ms=1000

# After a crash (kill -9) the restarted broker cannot register until the controller expires the
# dead incarnation's session (default 9 s); a shorter session makes restarts in tests faster.
broker.heartbeat.interval.ms=1000
broker.session.timeout.ms=4000

# The log cleaner preallocates this buffer on the heap (default 128 MiB); keep the heap modest.
log.cleaner.dedupe.buffer.size=33554432
EOF
}

java_opts() {
  # shellcheck disable=SC2206
  JAVA_OPTS=($HEAP_OPTS -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35
    -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true
    "-Dlog4j2.configurationFile=$LOG4J_CONFIG" $EXTRA_JVM_OPTS)
}

# Format the KRaft metadata log once. -g ignores an already formatted directory; --standalone
# makes this node the sole voter of a dynamic quorum (controller.quorum.bootstrap.servers). KRaft keeps
# SCRAM credentials in the metadata log: the admin's are written at format time (--add-scram), the
# services' later through the admin API (`keel acl --apply`).
format_storage() {
  if [[ -f "$LOG_DIRS/meta.properties" ]]; then
    return 0
  fi
  local id
  id="$(cluster_id)"
  mkdir -p "$LOG_DIRS"
  echo "keel: formatting KRaft storage in $LOG_DIRS (cluster id $id) ..."
  if ! "$JAVA" -Xmx256m "-Dlog4j2.configurationFile=$LOG4J_CONFIG" -cp "$LIB_DIR/*" \
    kafka.tools.StorageTool format -c "$CONFIG" -t "$id" -g --standalone \
    --add-scram "SCRAM-SHA-512=[name=$ADMIN_USER,password=$ADMIN_PASSWORD]" \
    >"$KAFKA_DIR/format.log" 2>&1 </dev/null; then
    cat "$KAFKA_DIR/format.log" >&2
    die "formatting the KRaft storage failed"
  fi
}

# ---------------------------------------------------------------------------------------------
# commands

# Wait until the broker with this pid logged that it started and accepts connections.
# Returns 1 on timeout, 2 when the process died.
wait_ready() {
  local pid="$1" deadline=$((SECONDS + START_TIMEOUT))
  while :; do
    # kill -0 only: right after the fork the child's command line is still that of this shell.
    if ! kill -0 "$pid" 2>/dev/null; then
      return 2
    fi
    if [[ -f "$LOG_FILE" ]] && grep -qF "$READY_MARKER" "$LOG_FILE" && port_open "$PORT" &&
      port_open "$ADMIN_PORT"; then
      return 0
    fi
    if ((SECONDS >= deadline)); then
      return 1
    fi
    sleep 0.2
  done
}

cmd_install() {
  install_kafka verbose
}

cmd_start() {
  take_lock
  local pid
  pid="$(running_pid)"
  if [[ -n "$pid" ]]; then
    echo "kafka already running (pid $pid, port $PORT)"
    return 0
  fi
  rm -f "$PID_FILE"
  command -v "$JAVA" >/dev/null 2>&1 || die "java (17 or newer) is required"
  install_kafka
  if port_open "$PORT"; then
    die "port $PORT is already in use by another process (set KEEL_KAFKA_PORT)"
  fi
  if port_open "$CONTROLLER_PORT"; then
    die "port $CONTROLLER_PORT is already in use by another process (set KEEL_KAFKA_CONTROLLER_PORT)"
  fi
  if port_open "$ADMIN_PORT"; then
    die "port $ADMIN_PORT is already in use by another process (set KEEL_KAFKA_ADMIN_PORT)"
  fi
  write_config
  format_storage

  if [[ -f "$LOG_FILE" ]]; then
    mv -f "$LOG_FILE" "$LOG_FILE.1"
  fi
  java_opts
  echo "keel: starting Kafka $KAFKA_VERSION on 127.0.0.1:$PORT ..."
  local started=$SECONDS
  nohup "$JAVA" "${JAVA_OPTS[@]}" -cp "$LIB_DIR/*" kafka.Kafka "$CONFIG" \
    >"$LOG_FILE" 2>&1 </dev/null 9>&- &
  pid=$!
  echo "$pid" >"$PID_FILE"

  local rc=0
  wait_ready "$pid" || rc=$?
  case "$rc" in
    0)
      echo "kafka ready on 127.0.0.1:$PORT, admin door 127.0.0.1:$ADMIN_PORT (pid $pid, $((SECONDS - started))s)"
      ;;
    2)
      rm -f "$PID_FILE"
      log_tail 60
      die "kafka exited during startup (see $LOG_FILE)"
      ;;
    *)
      log_tail 60
      echo "keel: kafka not ready after ${START_TIMEOUT}s; stopping it" >&2
      stop_pid "$pid"
      die "kafka did not become ready within ${START_TIMEOUT}s (see $LOG_FILE)"
      ;;
  esac
}

stop_pid() {
  local pid="$1" deadline=$((SECONDS + STOP_TIMEOUT))
  kill -TERM "$pid" 2>/dev/null || true
  while kill -0 "$pid" 2>/dev/null; do
    if ((SECONDS >= deadline)); then
      echo "keel: kafka (pid $pid) still running after ${STOP_TIMEOUT}s; sending SIGKILL" >&2
      kill -KILL "$pid" 2>/dev/null || true
      break
    fi
    sleep 0.2
  done
  while kill -0 "$pid" 2>/dev/null; do
    sleep 0.1
  done
  rm -f "$PID_FILE"
}

cmd_stop() {
  take_lock
  local pid
  pid="$(running_pid)"
  if [[ -z "$pid" ]]; then
    rm -f "$PID_FILE"
    echo "kafka not running"
    return 0
  fi
  echo "keel: stopping kafka (pid $pid) ..."
  local started=$SECONDS
  stop_pid "$pid"
  echo "kafka stopped ($((SECONDS - started))s)"
}

cmd_kill() {
  take_lock
  local pid
  pid="$(running_pid)"
  if [[ -z "$pid" ]]; then
    rm -f "$PID_FILE"
    echo "kafka not running"
    return 0
  fi
  kill -KILL "$pid" 2>/dev/null || true
  while kill -0 "$pid" 2>/dev/null; do
    sleep 0.1
  done
  rm -f "$PID_FILE"
  echo "kafka killed (pid $pid)"
}

cmd_status() {
  local pid
  pid="$(running_pid)"
  if [[ -n "$pid" ]]; then
    echo "kafka running (pid $pid, port $PORT)"
    return 0
  fi
  echo "kafka stopped"
  return 3
}

cmd_wait() {
  local pid
  pid="$(running_pid)"
  [[ -n "$pid" ]] || die "kafka not running"
  local rc=0
  wait_ready "$pid" || rc=$?
  case "$rc" in
    0) echo "kafka ready on 127.0.0.1:$PORT (pid $pid)" ;;
    2)
      log_tail 60
      die "kafka exited (see $LOG_FILE)"
      ;;
    *)
      log_tail 60
      die "kafka did not become ready within ${START_TIMEOUT}s (see $LOG_FILE)"
      ;;
  esac
}

main() {
  [[ $# -eq 1 ]] || usage
  case "$1" in
    install | start | stop | status | kill | wait) ;;
    *) usage ;;
  esac
  validate_env
  init_paths
  case "$1" in
    install) cmd_install ;;
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    kill) cmd_kill ;;
    wait) cmd_wait ;;
  esac
}

main "$@"
