#!/bin/sh
# Builds the C++ simulated sidecar into benchmarks/ads_client_cc/build/ads_client (git-ignored).
# Needs the Debian packages libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out="$here/build"
mkdir -p "$out"
protoc -I "$here" --cpp_out="$out" --grpc_out="$out" \
    --plugin=protoc-gen-grpc="$(command -v grpc_cpp_plugin)" "$here/ads.proto"
# shellcheck disable=SC2046
g++ -std=c++17 -O2 -Wall -Wextra -I "$out" -o "$out/ads_client" \
    "$here/ads_client.cc" "$out/ads.pb.cc" "$out/ads.grpc.pb.cc" \
    $(pkg-config --cflags --libs grpc++ protobuf absl_synchronization) -lpthread
echo "$out/ads_client"
