#!/bin/sh
# clipper/redis HEALTHCHECK: PING the port redis-server shows in its process title ("redis-server *:6379").
port=$(tr '\0' ' ' < /proc/1/cmdline | sed -n 's/.*redis-server [^ ]*:\([0-9][0-9]*\).*/\1/p')
[ "$(redis-cli -p "${port:-6379}" ping 2>/dev/null)" = PONG ]
