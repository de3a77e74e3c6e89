#!/usr/bin/env bash
# Builds llama.cpp's own benchmark tool `llama-bench` (and `llama-completion`, llama.cpp's one-shot text
# generator, which shares all of its libraries) from the llama.cpp sources that the llama-cpp-python sdist
# vendors under vendor/llama.cpp: the reference benchmarks/decode.py measures HessGPT against.
#
# Usage: scripts/build-llama-bench.sh [--check]
#   --check  build nothing: print the binary path if it is built (exit 0), else say what is missing (exit 1).
# Environment:
#   LLAMA_CPP_PYTHON_VERSION  the llama-cpp-python sdist to take llama.cpp from (default: the pin below)
#   HESSGPT_LLAMA_CPP_DIR     where to build/install (default $XDG_CACHE_HOME/hessgpt/llama.cpp/<version>,
#                             i.e. ~/.cache/hessgpt/llama.cpp/<version>); binaries land in its bin/
#   PYTHON                    the Python whose pip downloads the sdist (default .venv/bin/python, else python3)
#   LLAMA_NO_AMX=1            compile without Intel AMX (-mno-amx-*): where the kernel does not grant AMX tiles
#                             (seen in a sandboxed VM whose CPU lists amx_int8), llama.cpp's AMX buffer crashes
#                             every quantized model (q8_0, q4_0: SIGSEGV while repacking); f32 runs either way
#   JOBS                      parallel compile jobs (default: nproc)
# Idempotent: when bin/llama-bench exists and runs, it only prints its path and version.
# Release build, GGML_NATIVE=ON (this CPU's instruction set), static libraries, no CURL/OpenSSL, no server,
# no tests; only the two targets are compiled. It runs under `nice -n 19` (the CPU may be shared).
# A few minutes on 2 cores; the sdist is ~75 MB.
set -euo pipefail
check=0
case "${1:-}" in
  "") ;;
  --check) check=1 ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

version="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/hessgpt/llama.cpp/$version"
prefix="${HESSGPT_LLAMA_CPP_DIR:-$cache}"
bin="$prefix/bin/llama-bench"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="${PYTHON:-}"
if [ -z "$py" ]; then
  if [ -x "$here/.venv/bin/python" ]; then py="$here/.venv/bin/python"; else py="$(command -v python3 || true)"; fi
fi

report() {  # path + the llama.cpp commit it was built from
  echo "llama-bench: $bin"
  echo "llama.cpp: $(cat "$prefix/VERSION" 2>/dev/null || echo unknown) (vendored by llama-cpp-python $version)"
  "$bin" --version 2>&1 | grep -i "version" | head -1 || true
}

if [ -x "$bin" ] && "$bin" --help >/dev/null 2>&1; then
  report
  exit 0
fi

missing=0
command -v cmake >/dev/null 2>&1 || { echo "missing: cmake (Debian/Ubuntu: apt-get install cmake; or pip install cmake)" >&2; missing=1; }
command -v g++ >/dev/null 2>&1 || command -v c++ >/dev/null 2>&1 \
  || { echo "missing: a C++17 compiler, g++ (Debian/Ubuntu: apt-get install g++)" >&2; missing=1; }
command -v make >/dev/null 2>&1 || command -v ninja >/dev/null 2>&1 \
  || { echo "missing: make or ninja (Debian/Ubuntu: apt-get install make)" >&2; missing=1; }
command -v git >/dev/null 2>&1 || echo "note: git not found: the build cannot read its llama.cpp commit (apt-get install git)" >&2
{ [ -n "$py" ] && "$py" -m pip --version >/dev/null 2>&1; } \
  || { echo "missing: a Python with pip to download the sdist (make install, or set PYTHON=)" >&2; missing=1; }
if [ "$check" -eq 1 ]; then
  echo "llama-bench not built: $bin (run scripts/build-llama-bench.sh)" >&2
  exit 1
fi
[ "$missing" -eq 0 ] || exit 1

mkdir -p "$cache"
sdist="$cache/llama_cpp_python-$version.tar.gz"
if [ ! -s "$sdist" ]; then
  echo "downloading the llama-cpp-python $version sdist into $cache" >&2
  "$py" -m pip download -q --no-binary :all: --no-deps "llama-cpp-python==$version" -d "$cache"
fi
[ -s "$sdist" ] || { echo "no sdist at $sdist after pip download" >&2; exit 1; }
src="$cache/src"
if [ ! -f "$src/vendor/llama.cpp/CMakeLists.txt" ]; then
  rm -rf "$src" "$src.tmp"
  mkdir -p "$src.tmp"
  tar xzf "$sdist" -C "$src.tmp" --strip-components=1
  mv "$src.tmp" "$src"
fi
llama="$src/vendor/llama.cpp"
[ -f "$llama/CMakeLists.txt" ] || { echo "the sdist has no vendor/llama.cpp/CMakeLists.txt: $sdist" >&2; exit 1; }
commit="$(git -C "$llama" rev-parse --short HEAD 2>/dev/null || echo unknown)"
date="$(git -C "$llama" log -1 --format=%cs 2>/dev/null || echo unknown)"

gen=()
command -v ninja >/dev/null 2>&1 && gen=(-G Ninja)
build="$cache/build"
log="$cache/build.log"
echo "building llama.cpp $commit ($date) in $build (log: $log)" >&2
flags=()
if [ "${LLAMA_NO_AMX:-0}" = 1 ]; then
  flags=(-DCMAKE_C_FLAGS="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16" -DCMAKE_CXX_FLAGS="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16")
fi
if ! { nice -n 19 cmake -S "$llama" -B "$build" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON "${flags[@]}" \
         -DBUILD_SHARED_LIBS=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF \
         -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=ON -DLLAMA_USE_PREBUILT_UI=OFF \
       && nice -n 19 cmake --build "$build" --config Release --target llama-bench llama-completion -j "${JOBS:-$(nproc)}"; \
     } >"$log" 2>&1; then
  tail -n 30 "$log" >&2
  echo "llama.cpp build failed (full log: $log)" >&2
  exit 1
fi
mkdir -p "$prefix/bin"
for t in llama-bench llama-completion; do
  cp "$build/bin/$t" "$prefix/bin/$t.tmp"
  mv "$prefix/bin/$t.tmp" "$prefix/bin/$t"
done
amx=""
[ "${LLAMA_NO_AMX:-0}" = 1 ] && amx=", built without AMX"
echo "$commit ($date)$amx" > "$prefix/VERSION"
report
