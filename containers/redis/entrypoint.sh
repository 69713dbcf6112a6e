#!/bin/sh
# clipper/redis entrypoint: `-flags...` alone run redis-server with them; redis-server runs with
# --protected-mode no (a container is reached from other containers), after its config file if any.
set -e
case "${1:-}" in
    -*) set -- redis-server "$@" ;;
esac
if [ "${1:-}" = redis-server ]; then
    shift
    if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then
        conf=$1
        shift
        set -- redis-server "$conf" --protected-mode no "$@"
    else
        set -- redis-server --protected-mode no "$@"
    fi
fi
exec "$@"
