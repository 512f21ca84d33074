#!/usr/bin/env bash
# spark-connect.sh — local Spark Connect server (Spark 4.x from the pyspark pip package), offline,
# for microseg's warehouse tests (./test starts and stops it; written from the team's tested recipe).
#
#   bash spark-connect.sh install          # Java 17 (Debian) + venv with pyspark[connect]
#   URL=$(bash spark-connect.sh start)     # prints sc://127.0.0.1:15002 as the only stdout line
#   bash spark-connect.sh stop             # kills the server by its PID, removes its temp dir
#   "$(bash spark-connect.sh python)" x.py # the venv's python (pyspark client installed)
#
# Port: $SPARK_CONNECT_PORT (default 15002). Venv: $SPARK_VENV (default ${TMPDIR:-/tmp}/microseg-spark-venv).
# Spark 4.x ships the Connect server jar (jars/spark-connect_2.13-*.jar) inside the pyspark
# wheel, so no --packages download is needed. Spark 4 needs Java 17 or 21; Debian 12 has only 17.
# Safe to run twice: install skips what is there; start on a running server just re-prints the URL.
set -euo pipefail
# runuser, useradd and friends live in sbin, which a minimal PATH (env -i, CI) leaves out.
export PATH="$PATH:/usr/sbin:/sbin"

MODE=${1:-start}
PORT=${SPARK_CONNECT_PORT:-15002}
PYSPARK_VERSION=${PYSPARK_VERSION:-4.3.0}
VENV=${SPARK_VENV:-${TMPDIR:-/tmp}/microseg-spark-venv}
BASE=${TMPDIR:-/tmp}/microseg-spark-$PORT      # pid, logs, spark.local.dir
log() { echo "spark-connect.sh: $*" >&2; }

java_ok() {  # java on PATH with major version >= 17
  command -v java >/dev/null || return 1
  local v; v=$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n1)
  [[ -n $v && $v -ge 17 ]]
}

install_all() {
  if ! java_ok; then
    log "installing openjdk-17-jre-headless from Debian"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends openjdk-17-jre-headless >/dev/null
  fi
  if ! "$VENV/bin/python" -c "import pyspark, grpc, pyarrow, pandas; assert pyspark.__version__ == '$PYSPARK_VERSION'" 2>/dev/null; then
    log "installing pyspark[connect]==$PYSPARK_VERSION into $VENV"
    # The image's python3 (3.11) has venv; Debian's own python3 needs python3-venv for it.
    python3 -c 'import ensurepip' 2>/dev/null || apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
    python3 -m venv "$VENV"
    # pyspark is a ~456 MB sdist (jars included) built into a wheel locally; pip's cache keeps
    # that wheel, so a reinstall on the same machine is much faster.
    # pandas<3: pyspark 4.3 warns that pandas 3 is not fully supported yet.
    "$VENV/bin/pip" install -q --disable-pip-version-check "pyspark[connect]==$PYSPARK_VERSION" "pandas<3"
  fi
}

spark_home() { "$VENV/bin/python" -c 'import pyspark, os; print(os.path.dirname(pyspark.__file__))'; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; }

start_sc() {
  install_all
  if [[ -f $BASE/pid ]] && kill -0 "$(cat "$BASE/pid")" 2>/dev/null && port_open; then
    log "already running (pid $(cat "$BASE/pid"))"; echo "sc://127.0.0.1:$PORT"; return 0
  fi
  if port_open; then log "port $PORT is taken by something else"; exit 1; fi
  rm -rf "$BASE"; mkdir -p "$BASE/local"
  local java_bin; java_bin=$(readlink -f "$(command -v java)")
  export JAVA_HOME=${JAVA_HOME:-$(dirname "$(dirname "$java_bin")")}
  export SPARK_HOME; SPARK_HOME=$(spark_home)
  export SPARK_LOCAL_IP=127.0.0.1 SPARK_LOG_DIR=$BASE
  # Same as $SPARK_HOME/sbin/start-connect-server.sh, but launched directly so that $! is the
  # java process itself (spark-submit and spark-class exec into it): we keep that PID to stop it.
  nohup "$SPARK_HOME/bin/spark-submit" \
    --class org.apache.spark.sql.connect.service.SparkConnectServer --name microseg-spark-connect \
    --master 'local[2]' --driver-memory "${SPARK_DRIVER_MEMORY:-1g}" \
    --driver-java-options "-Djava.io.tmpdir=$BASE/local" \
    --conf spark.connect.grpc.binding.address=127.0.0.1 \
    --conf spark.connect.grpc.binding.port="$PORT" \
    --conf spark.driver.host=127.0.0.1 --conf spark.driver.bindAddress=127.0.0.1 \
    --conf spark.ui.enabled=false --conf spark.local.dir="$BASE/local" \
    --conf spark.sql.shuffle.partitions=2 \
    --conf spark.sql.warehouse.dir="$BASE/warehouse" \
    >"$BASE/server.log" 2>&1 </dev/null &
  echo $! >"$BASE/pid"
  # JVM start + SparkContext: ~6 s on 2 cores. Wait up to 120 s for the gRPC port.
  for _ in $(seq 1 480); do
    port_open && { echo "sc://127.0.0.1:$PORT"; return 0; }
    kill -0 "$(cat "$BASE/pid")" 2>/dev/null || break
    sleep 0.25
  done
  log "server did not come up; log follows"; tail -n 30 "$BASE/server.log" >&2
  stop_sc; exit 1
}

stop_sc() {
  if [[ -f $BASE/pid ]]; then
    local pid; pid=$(cat "$BASE/pid")
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid"                                   # SIGTERM: Spark's shutdown hooks run (~2 s)
      for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
      if kill -0 "$pid" 2>/dev/null; then kill -9 "$pid"; fi  # still there after 20 s
    fi
  fi
  rm -rf "$BASE"
  log "stopped (port $PORT)"
}

case $MODE in
  install) install_all ;;
  start)   start_sc ;;
  stop)    stop_sc ;;
  python)  echo "$VENV/bin/python" ;;
  *) echo "usage: $0 [install|start|stop|python]" >&2; exit 2 ;;
esac
