#!/bin/sh
# bench/peer_ort_setup.sh DIR - install ONNX Runtime's Node.js package
# (npm onnxruntime-node) into DIR/node_modules, unless it is there already
# and loads. --ignore-scripts: its install script only downloads GPU
# binaries; the CPU library ships inside the package. Needs node and npm.
set -eu
dir=${1:?usage: peer_ort_setup.sh DIR}
mkdir -p "$dir"
if NODE_PATH="$dir/node_modules" node -e "require('onnxruntime-node')" 2>/dev/null; then
	exit 0
fi
command -v npm >/dev/null 2>&1 || { echo "peer_ort_setup: npm not found" >&2; exit 1; }
echo "peer_ort_setup: npm install --ignore-scripts onnxruntime-node into $dir" >&2
(cd "$dir" && npm install --ignore-scripts --no-audit --no-fund --loglevel=error onnxruntime-node >&2)
NODE_PATH="$dir/node_modules" node -e "require('onnxruntime-node')" ||
	{ echo "peer_ort_setup: onnxruntime-node does not load" >&2; exit 1; }
