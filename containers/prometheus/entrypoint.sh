#!/bin/sh
# clipper/prometheus entrypoint: the configuration from $CLIPPER_PROMETHEUS_CONFIG (when set), target files
# emptied (the manager writes the current ones once the server is up; a kept volume may hold stale ones), then
# prometheus on 0.0.0.0:9090 with its data in /prometheus/data; arguments are added to its command line.
set -e
conf=/etc/clipper-prometheus/prometheus.yml
if [ -n "${CLIPPER_PROMETHEUS_CONFIG:-}" ]; then
    printf '%s\n' "$CLIPPER_PROMETHEUS_CONFIG" > "$conf"
fi
mkdir -p /prometheus/data /prometheus/targets
for job in query_frontend model_container; do
    echo '[]' > "/prometheus/targets/$job.json"
done
exec prometheus --config.file="$conf" --storage.tsdb.path=/prometheus/data --web.listen-address=0.0.0.0:9090 \
    --log.level=warn "$@"
