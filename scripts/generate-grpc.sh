#!/usr/bin/env bash
# Regenerates Sources/SluiceGRPC/Generated from proto/kserve_v2.proto. Run by hand after editing
# the .proto; the output is committed and CI never runs this (the plugins take minutes to build).
# Needs: python3 (protoc from PyPI's grpcio-tools) and the Swift packages' mirror (the plugins).
set -euo pipefail
cd "$(dirname "$0")/.."
work=${SLUICE_PROTOC_WORK:-/tmp/sluice-protoc}
mkdir -p "$work/plugins/Sources/plugins"
if [ ! -x "$work/venv/bin/python" ]; then
    python3 -m venv "$work/venv"
    "$work/venv/bin/pip" install -q grpcio-tools
fi
# The plugins, at the versions Package.swift uses, built in a scratch package of their own.
cat > "$work/plugins/Package.swift" <<'SWIFT'
// swift-tools-version:6.1
import PackageDescription
let package = Package(
    name: "plugins",
    dependencies: [
        .package(url: "https://github.com/apple/swift-protobuf.git", from: "1.39.0"),
        .package(url: "https://github.com/grpc/grpc-swift-protobuf.git", from: "2.4.1"),
    ],
    targets: [.target(name: "plugins")]
)
SWIFT
echo 'let plugins = 0' > "$work/plugins/Sources/plugins/plugins.swift"
(cd "$work/plugins" && swift build -c release --product protoc-gen-swift && swift build -c release --product protoc-gen-grpc-swift-2)
bin=$(cd "$work/plugins" && swift build -c release --show-bin-path)
out=Sources/SluiceGRPC/Generated
mkdir -p "$out"
"$work/venv/bin/python" -m grpc_tools.protoc -I proto \
    --plugin=protoc-gen-swift="$bin/protoc-gen-swift" --swift_out="$out" --swift_opt=Visibility=Public \
    --plugin=protoc-gen-grpc-swift="$bin/protoc-gen-grpc-swift-2" --grpc-swift_out="$out" \
    --grpc-swift_opt=Visibility=Public,Server=true,Client=true \
    proto/kserve_v2.proto
echo "generated: $(ls "$out")"
