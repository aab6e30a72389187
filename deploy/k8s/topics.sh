#!/usr/bin/env bash
# Create (or check) the Kafka topics pantau uses. Idempotent: run it before the first worker starts,
# and again whenever you like. Runs in the apache/kafka image (compose service `topics`, Kubernetes
# Job `pantau-topics`) or anywhere Kafka's command-line tools are installed (KAFKA_BIN).
#
# It reads the same PANTAU_* variables as the workers, so one configuration serves both:
#
#   PANTAU_BROKER              bootstrap servers                         kafka:9092
#   PANTAU_PARTITIONS          partitions of the keyed topics            48
#   PANTAU_REPLICATION         replication factor                        1 (production: 3)
#   PANTAU_MAX_MESSAGE_BYTES   max.message.bytes of every topic          4194304 (stream/settings.py)
#   PANTAU_TOPIC_SUBMISSIONS / _ALERTS / _DEADLETTER / _VERDICTS / _REGIONAL   topic names (defaults below)
#
# and a few that only concern the topics:
#
#   TOPIC_MIN_INSYNC_REPLICAS  min.insync.replicas (with acks=all: how many copies a write needs)
#                              default: 2 when the replication factor is 3 or more, else 1
#   TOPIC_RETENTION_MS         retention of submissions, alerts, verdicts, dead letters
#                              default -1 (keep forever: the audit replay reads them again)
#   TOPIC_REGIONAL_RETENTION_MS  retention of pantau.regional (intermediate region sums; the assessor
#                              keeps its own state in a changelog)   default 604800000 (7 days)
#   PANTAU_SECURITY_PROTOCOL, PANTAU_SASL_MECHANISM, PANTAU_SASL_USERNAME, PANTAU_SASL_PASSWORD,
#   PANTAU_SSL_CAFILE, PANTAU_SSL_CERTFILE, PANTAU_SSL_KEYFILE
#                              TLS/SASL as for the workers: written into a client properties file for
#                              the Kafka tools (PEM files; the key unencrypted PKCS#8, "BEGIN PRIVATE
#                              KEY"; no backslash or double quote in the SASL password)
#   KAFKA_COMMAND_CONFIG       or a client properties file of your own (--command-config), used as is
#   KAFKA_BIN                  where kafka-topics.sh lives           /opt/kafka/bin
#
# Why 48 partitions: submissions (and verdicts, and the workers' state tables) are keyed by the
# 4-digit kabupaten/kota code, and there are ~514 kab/kota. 48 partitions spread those keys evenly
# (~11 each) and let up to 48 workers share the load; a partition is the unit of parallelism, so
# more workers than partitions would sit idle. The count must equal every worker's PANTAU_PARTITIONS
# (the state tables are co-partitioned with the submissions), and must not change once data has
# flowed: Kafka can only add partitions, and adding them moves keys to other partitions. This script
# therefore fails if a topic already exists with another partition count.
set -euo pipefail

BOOTSTRAP="${PANTAU_BROKER:-kafka:9092}"
PARTITIONS="${PANTAU_PARTITIONS:-48}"
REPLICATION="${PANTAU_REPLICATION:-1}"
MAX_MESSAGE_BYTES="${PANTAU_MAX_MESSAGE_BYTES:-4194304}"
if [ "${REPLICATION}" -ge 3 ]; then default_isr=2; else default_isr=1; fi
MIN_INSYNC_REPLICAS="${TOPIC_MIN_INSYNC_REPLICAS:-${default_isr}}"
RETENTION_MS="${TOPIC_RETENTION_MS:--1}"
REGIONAL_RETENTION_MS="${TOPIC_REGIONAL_RETENTION_MS:-604800000}"
KAFKA_BIN="${KAFKA_BIN:-/opt/kafka/bin}"

# name, partitions, retention
TOPICS=(
    "${PANTAU_TOPIC_SUBMISSIONS:-sirekap.submissions} ${PARTITIONS} ${RETENTION_MS}"
    "${PANTAU_TOPIC_ALERTS:-pantau.alerts} ${PARTITIONS} ${RETENTION_MS}"
    "${PANTAU_TOPIC_DEADLETTER:-pantau.deadletter} ${PARTITIONS} ${RETENTION_MS}"
    "${PANTAU_TOPIC_VERDICTS:-pantau.verdicts} ${PARTITIONS} ${RETENTION_MS}"
    "${PANTAU_TOPIC_REGIONAL:-pantau.regional} 1 ${REGIONAL_RETENTION_MS}"  # one assessor sees every region
)

# TLS/SASL: the Kafka tools take a client properties file. KAFKA_COMMAND_CONFIG if given, else one
# written from the PANTAU_SECURITY_*, PANTAU_SASL_*, PANTAU_SSL_* variables the workers read.
PROTOCOL="${PANTAU_SECURITY_PROTOCOL:-PLAINTEXT}"
if [ -z "${KAFKA_COMMAND_CONFIG:-}" ] && [ "${PROTOCOL}" != "PLAINTEXT" ]; then
    umask 077  # it holds the SASL password (and the client key)
    KAFKA_COMMAND_CONFIG="$(mktemp)"
    trap 'rm -f "${KAFKA_COMMAND_CONFIG}" "${KAFKA_COMMAND_CONFIG}.pem"' EXIT
    {
        echo "security.protocol=${PROTOCOL}"
        case "${PROTOCOL}" in
            SASL_PLAINTEXT | SASL_SSL)
                mechanism="${PANTAU_SASL_MECHANISM:-PLAIN}"
                if [ "${mechanism}" = "PLAIN" ]; then
                    module=org.apache.kafka.common.security.plain.PlainLoginModule
                else
                    module=org.apache.kafka.common.security.scram.ScramLoginModule
                fi
                echo "sasl.mechanism=${mechanism}"
                echo "sasl.jaas.config=${module} required username=\"${PANTAU_SASL_USERNAME:?PANTAU_SASL_USERNAME is not set}\" password=\"${PANTAU_SASL_PASSWORD:?PANTAU_SASL_PASSWORD is not set}\";"
                ;;
        esac
        if [ -n "${PANTAU_SSL_CAFILE:-}" ]; then
            echo "ssl.truststore.type=PEM"
            echo "ssl.truststore.location=${PANTAU_SSL_CAFILE}"
        fi
        if [ -n "${PANTAU_SSL_CERTFILE:-}" ] && [ -n "${PANTAU_SSL_KEYFILE:-}" ]; then  # mutual TLS
            cat "${PANTAU_SSL_KEYFILE}" "${PANTAU_SSL_CERTFILE}" >"${KAFKA_COMMAND_CONFIG}.pem"
            echo "ssl.keystore.type=PEM"
            echo "ssl.keystore.location=${KAFKA_COMMAND_CONFIG}.pem"
        fi
    } >"${KAFKA_COMMAND_CONFIG}"
fi

client=(--bootstrap-server "${BOOTSTRAP}")
if [ -n "${KAFKA_COMMAND_CONFIG:-}" ]; then
    client+=(--command-config "${KAFKA_COMMAND_CONFIG}")
fi

echo "pantau topics on ${BOOTSTRAP} (${PROTOCOL}): ${PARTITIONS} partitions, replication ${REPLICATION}," \
     "min.insync.replicas ${MIN_INSYNC_REPLICAS}, max.message.bytes ${MAX_MESSAGE_BYTES}"

# The broker may still be electing its controller: wait until it answers (up to ~2 minutes).
for attempt in $(seq 1 24); do
    if "${KAFKA_BIN}/kafka-topics.sh" "${client[@]}" --list >/dev/null 2>&1; then
        break
    fi
    if [ "${attempt}" -eq 24 ]; then
        echo "Kafka at ${BOOTSTRAP} did not answer" >&2
        exit 1
    fi
    sleep 5
done

status=0
for spec in "${TOPICS[@]}"; do
    read -r name partitions retention <<<"${spec}"
    configs="max.message.bytes=${MAX_MESSAGE_BYTES},min.insync.replicas=${MIN_INSYNC_REPLICAS},retention.ms=${retention}"
    "${KAFKA_BIN}/kafka-topics.sh" "${client[@]}" --create --if-not-exists --topic "${name}" \
        --partitions "${partitions}" --replication-factor "${REPLICATION}" \
        --config "max.message.bytes=${MAX_MESSAGE_BYTES}" \
        --config "min.insync.replicas=${MIN_INSYNC_REPLICAS}" \
        --config "retention.ms=${retention}"
    # A topic that existed already (created by an earlier run, or by a worker that started first)
    # gets the same configuration: --if-not-exists alone would leave it as it was.
    "${KAFKA_BIN}/kafka-configs.sh" "${client[@]}" --alter --entity-type topics --entity-name "${name}" \
        --add-config "${configs}" >/dev/null
    actual="$("${KAFKA_BIN}/kafka-topics.sh" "${client[@]}" --describe --topic "${name}" \
        | sed -n 's/.*PartitionCount: *\([0-9]*\).*/\1/p' | head -n 1)"
    if [ "${actual}" != "${partitions}" ]; then
        echo "ERROR: ${name} has ${actual:-?} partitions, expected ${partitions}." \
             "Set PANTAU_PARTITIONS to the existing count on every worker (never repartition during an election)." >&2
        status=1
    else
        echo "ok ${name}: ${actual} partitions, ${configs}"
    fi
done
exit "${status}"
