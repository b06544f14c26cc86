#!/usr/bin/env bash
# Builds the CDC segment reader: target/cassandra-cdc-reader.jar, target/classpath.txt (Cassandra's
# jars in the local Maven repository) and target/reader.argfile, the JVM options and classpath in one
# java @argfile, so a caller runs `java @target/reader.argfile cdc.pipeline.CdcSegmentReader ...`.
# Idempotent: does nothing when all three are newer than every source, so CI may call it every time.
set -euo pipefail
cd "$(dirname "$0")"

JAR=target/cassandra-cdc-reader.jar
CLASSPATH_FILE=target/classpath.txt
ARGFILE=target/reader.argfile

up_to_date() {
  local out
  for out in "$JAR" "$CLASSPATH_FILE" "$ARGFILE"; do
    [ -f "$out" ] || return 1
    # Any source, the pom, this script or the JVM options newer than an output: rebuild.
    [ -z "$(find pom.xml build.sh jvm17.options src -newer "$out" -print -quit)" ] || return 1
  done
  # The class data sharing archive (below) is void once the jar or the JDK changes after it.
  if [ -f target/reader.jsa ]; then
    local jvm
    jvm="$(dirname "$(readlink -f "$(command -v java)")")/../lib/server/libjvm.so"
    [ -n "$(find target/reader.jsa -newer "$JAR")" ] || return 1
    [ ! -f "$jvm" ] || [ -z "$(find "$jvm" -newer target/reader.jsa)" ] || return 1
  fi
}

if up_to_date; then
  exit 0
fi

# A fresh Debian machine may lack the JDK or Maven (the same pattern as .ci/setup's apt installs).
if ! command -v mvn >/dev/null 2>&1 || ! command -v javac >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends openjdk-17-jdk-headless maven >/dev/null
fi

mvn -q -B package dependency:build-classpath -Dmdep.outputFile="$CLASSPATH_FILE"
# Maven leaves an unchanged jar's time alone: mark the outputs as built now (before the class data
# sharing archive below, which records the jar's time and is void if it changes).
touch "$JAR" "$CLASSPATH_FILE"

# The argfile: Cassandra's JDK 17 module flags (jvm17.options, comments dropped), a small heap (one
# segment of at most commitlog_segment_size is read per call), the serial collector and C1 only (a
# short-lived process: measured faster than G1 with C2 for batches up to 150,000 mutations here), and
# the classpath, quoted because an argfile splits on whitespace.
{
  grep -v '^[[:space:]]*\(#\|$\)' jvm17.options
  printf '%s\n' '-Xmx256m' '-XX:+UseSerialGC' '-XX:TieredStopAtLevel=1'
  printf -- '-cp\n"%s:%s"\n' "$PWD/$JAR" "$(cat "$CLASSPATH_FILE")"
} > "$ARGFILE.tmp"

# Class data sharing: loading and initialising Cassandra's classes is most of a run's start-up. One
# training run (an empty range: configuration, schema, reader set up) records the classes it loads
# into target/reader.jsa; runs that map it start about twice as fast. The archive is only valid for
# this JDK and these exact jars, hence made here, with them. If it cannot be made, runs just start
# slower; if it later goes stale (a JDK update), the JVM ignores it.
TRAINING=target/cds-training
rm -rf "$TRAINING" target/reader.jsa
mkdir -p "$TRAINING"
cat > "$TRAINING/cassandra.yaml" <<YAML
partitioner: org.apache.cassandra.dht.Murmur3Partitioner
endpoint_snitch: SimpleSnitch
commitlog_sync: batch
commitlog_directory: $PWD/$TRAINING/commitlog
data_file_directories: [$PWD/$TRAINING/data]
saved_caches_directory: $PWD/$TRAINING/saved_caches
hints_directory: $PWD/$TRAINING/hints
YAML
cat > "$TRAINING/schema.json" <<'JSON'
{"types": [{"keyspace": "training", "cql": "CREATE TYPE training.pair (a int, b text)"}],
 "tables": [{"keyspace": "training", "table": "t", "id": "00000000-0000-0000-0000-000000000001",
             "cql": "CREATE TABLE training.t (k text, c timestamp, v decimal, i bigint, u uuid, l list<int>, s set<text>, m map<text, frozen<pair>>, PRIMARY KEY ((k, i), c)) WITH cdc = true"}]}
JSON
if java -XX:ArchiveClassesAtExit=target/reader.jsa "@$ARGFILE.tmp" cdc.pipeline.CdcSegmentReader \
     "$TRAINING/cassandra.yaml" "$TRAINING/schema.json" "$TRAINING/CommitLog-7-1.log" 0 0 1 >/dev/null 2>"$TRAINING/stderr" \
   && [ -s target/reader.jsa ]; then
  printf -- '-XX:SharedArchiveFile=%s\n' "$PWD/target/reader.jsa" >> "$ARGFILE.tmp"
else
  echo "build.sh: no class data sharing archive (runs start slower): $(tail -1 "$TRAINING/stderr")" >&2
fi
mv "$ARGFILE.tmp" "$ARGFILE"
