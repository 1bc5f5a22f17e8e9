#!/usr/bin/env bash
# Compile the gRPC protocol into the descriptor set ferry loads at run time (needs grpcio-tools).
set -euo pipefail
cd "$(dirname "$0")/../src/ferry/protocol"
python -m grpc_tools.protoc -I. --descriptor_set_out=inference.desc inference.proto
echo "wrote $(pwd)/inference.desc"
