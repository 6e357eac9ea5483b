#!/usr/bin/env bash
# Build llama.cpp's own C++ server (llama-server) from the source that the installed
# llama-cpp-python vendors, for benchmarks/serve/bench.py's system "llama-server".
#   benchmarks/serve/build_llama_server.sh [DIR]     # default DIR: /tmp/llama-cpp-server
# Needs cmake, ninja and a C++ compiler; downloads the llama-cpp-python sdist from PyPI (the
# build itself is offline: no web UI from the hub, no curl). About 6 minutes on 2 cores.
# The same flags as the Makefile's llama-cpp-python build: native, but no AMX on x86 (ggml's AMX
# kernels crash on Sapphire Rapids VMs, llama.cpp#20824), so both run the same kernels.
set -euo pipefail
dir=${1:-/tmp/llama-cpp-server}
py=${PYTHON:-.venv/bin/python}
case $py in /*) ;; */*) py="$PWD/$py" ;; esac  # the venv's own path: resolving its symlink would leave the venv
version=$("$py" -c "import importlib.metadata as m; print(m.version('llama_cpp_python'))")
mkdir -p "$dir"
cd "$dir"
[ -f "llama_cpp_python-$version.tar.gz" ] ||
    "$py" -m pip download --no-deps --no-binary :all: "llama-cpp-python==$version" -d .
[ -d "llama_cpp_python-$version" ] || tar xzf "llama_cpp_python-$version.tar.gz"
src="llama_cpp_python-$version/vendor/llama.cpp"
flags=""
[ "$(uname -m)" = x86_64 ] && flags="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
cmake -S "$src" -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_UI=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
    -DCMAKE_C_FLAGS="$flags" -DCMAKE_CXX_FLAGS="$flags" >/dev/null
ninja -C build llama-server
echo "$dir/build/bin/llama-server"
