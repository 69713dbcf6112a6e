#!/bin/sh
# Builds the Java container library with javac/jar only (no Maven): OUT/clipper-container.jar (the
# library and its entry point) and OUT/clipper-examples.jar (NoopModel, ConformanceModel).
#   containers/java/build.sh [OUT]          OUT defaults to containers/java/build
# Compiles against the ZeroMQ binding in $CLIPPER_ZMQ_JAR, else Debian's libzmq-java
# (/usr/share/java/zmq.jar), else JeroMQ (/usr/share/java/jeromq.jar): the jars run with either.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/build}
zmq=${CLIPPER_ZMQ_JAR:-}
if [ -z "$zmq" ]; then
    for j in /usr/share/java/zmq.jar /usr/share/java/jeromq.jar; do
        if [ -f "$j" ]; then zmq=$j; break; fi
    done
fi
if [ -z "$zmq" ] || [ ! -f "$zmq" ]; then
    echo "build.sh: no ZeroMQ Java jar: apt-get install libzmq-java (or libjeromq-java), or set CLIPPER_ZMQ_JAR" >&2
    exit 1
fi
# javac and jar, else the same tools from a JRE's modules (Debian's JRE carries jdk.compiler and jdk.jartool)
if command -v javac >/dev/null && [ -z "${CLIPPER_JAVA_TOOLS_FROM_JRE:-}" ]; then
    run_javac() { javac "$@"; }
    run_jar() { jar "$@"; }
else
    command -v java >/dev/null || { echo "build.sh: no java: apt-get install default-jdk-headless" >&2; exit 1; }
    run_javac() { java -m jdk.compiler/com.sun.tools.javac.Main "$@"; }
    run_jar() { java -m jdk.jartool/sun.tools.jar.Main "$@"; }
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$out" "$tmp/lib" "$tmp/examples"
run_javac --release 11 -encoding UTF-8 -Xlint:all,-serial -Werror -d "$tmp/lib" -cp "$zmq" \
    $(find "$here/src" -name '*.java' | sort)
run_jar --create --file "$tmp/clipper-container.jar" --main-class ai.clipper.container.ModelContainer -C "$tmp/lib" .
run_javac --release 11 -encoding UTF-8 -Xlint:all,-serial -Werror -d "$tmp/examples" -cp "$tmp/clipper-container.jar" \
    $(find "$here/examples" -name '*.java' | sort)
run_jar --create --file "$tmp/clipper-examples.jar" -C "$tmp/examples" .
mv "$tmp/clipper-container.jar" "$tmp/clipper-examples.jar" "$out/"
echo "built $out/clipper-container.jar and $out/clipper-examples.jar (against $zmq)"
