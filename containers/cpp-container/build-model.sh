#!/bin/sh
# clipper-build-model CONTEXT: compiles a user's C++ model into /usr/local/bin/clipper-model (run by the
# ONBUILD trigger of clipper/cpp-container, in one RUN, so the model image keeps only the binary).
#
# The model folder is CONTEXT/model when present (the layout of ClipperConnection.build_model's build
# context), else CONTEXT. It holds model.cpp (and any other .cpp files), compiled with
#   c++ -std=c++20 -O2 *.cpp -lclipper_container -lzmq -pthread
# or a CMakeLists.txt with an executable target named clipper-model, e.g.
#   find_package(ClipperContainer REQUIRED)
#   add_executable(clipper-model model.cpp)
#   target_link_libraries(clipper-model PRIVATE clipper::container)
# The toolchain (.deb files in /opt/clipper-cpp/debs) is installed for the build and purged after it.
set -eu
ctx=${1:?usage: clipper-build-model CONTEXT}
src=$ctx
[ -d "$ctx/model" ] && src=$ctx/model
if [ ! -f "$src/CMakeLists.txt" ] && ! ls "$src"/*.cpp >/dev/null 2>&1; then
    echo "clipper-build-model: no model.cpp nor CMakeLists.txt in the model folder ($src)" >&2
    exit 1
fi

added=""
if ! command -v c++ >/dev/null 2>&1 || ! command -v cmake >/dev/null 2>&1; then
    before=$(mktemp)
    dpkg-query -W -f '${Package}\n' | sort > "$before"
    dpkg -i /opt/clipper-cpp/debs/*.deb > /tmp/clipper-toolchain.log 2>&1 || {
        cat /tmp/clipper-toolchain.log >&2; exit 1; }
    added=$(dpkg-query -W -f '${Package}\n' | sort | comm -13 "$before" -)
    rm -f "$before" /tmp/clipper-toolchain.log
fi

out=$(mktemp -d)
if [ -f "$src/CMakeLists.txt" ]; then
    cmake -S "$src" -B "$out" -DCMAKE_BUILD_TYPE=Release
    cmake --build "$out" --target clipper-model -j "$(nproc)"
    built=$out/clipper-model
else
    c++ -std=c++20 -O2 -Wall -Wextra "$src"/*.cpp -o "$out/clipper-model" -lclipper_container -lzmq -pthread
    built=$out/clipper-model
fi
rm -f /usr/local/bin/clipper-model  # a link to clipper-noop in the base image
install -m 755 "$built" /usr/local/bin/clipper-model
rm -rf "$out" "$ctx"

if [ -n "$added" ]; then
    # shellcheck disable=SC2086
    dpkg --purge $added > /dev/null
fi
rm -rf /var/cache/debconf/*-old /var/lib/dpkg/*-old
echo "clipper-build-model: built /usr/local/bin/clipper-model from $src"
