#!/usr/bin/env bash
# GPU bring-up for vit-deno: WebGPU (Deno's wgpu over Vulkan) on the lent NVIDIA machine, the timm parity tests
# there, and the bench side by side with timm/PyTorch on the same GPU.
#
#   UNTESTED: written in a session that had no GPU lent (device tool status: "not drawn"). Every step follows
#   /work/shared/docs/gpu.md and the device tool's README; the first session with a GPU must run it, fix what
#   breaks, and record the outcome in docs/gpu.md.
#
# Two halves:
#   scripts/gpu_bringup.sh prepare   on the CPU machine: fills tmp/gpu/ (git-ignored, ~50 MB) with everything the
#                                    GPU machine cannot fetch: xz'd deno binary, bundled bench and parity tests,
#                                    tfjs-wasm binaries, the fixtures the parity tests read, the Vulkan loader debs.
#   scripts/gpu_bringup.sh run       on the GPU machine, through the device tool, in one call:
#     run(command="bash scripts/gpu_bringup.sh run", carry=["tmp/gpu"], timeout_s=580)
#   It writes its log, the bench JSON/Markdown and the probe output under $OUT (they come back).
#
# Budget: a lent task has 15 device-minutes in all, starts included; the run half is sized for ~9 minutes (parity 150 s, bench 240 s, forced-WGSL bench 100 s at most).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
GPU="$ROOT/tmp/gpu"
SHARED="${VIT_SHARED:-$ROOT/../shared}"

prepare() {
  mkdir -p "$GPU/fixtures/vit/micro" "$GPU/fixtures/vit/base" "$GPU/anchors" "$GPU/wasm" "$GPU/debs"
  cd "$ROOT"
  # 1. Deno itself: ~95 MB, over what travels; xz -9 brings it to ~28 MB.
  local deno_bin
  deno_bin="$(readlink -f "$(command -v deno)")"
  if [[ ! -s "$GPU/deno.xz" || "$deno_bin" -nt "$GPU/deno.xz" ]]; then
    xz -9 -T2 -c "$deno_bin" >"$GPU/deno.xz.tmp" && mv "$GPU/deno.xz.tmp" "$GPU/deno.xz"
  fi
  # 2. The code, bundled with its npm dependencies (node_modules is 600+ MB here). onnxruntime-node is a native
  #    addon and stays out: the GPU run uses --no-anchor (the ONNX anchor is a CPU figure).
  deno bundle --platform deno --external onnxruntime-node -o "$GPU/bench.js" scripts/bench.ts
  deno bundle --platform deno -o "$GPU/parity_test.js" tests/vit_parity_test.ts
  # tfjs-wasm's Node build locates its .wasm next to __dirname, which a bundle lacks: the prelude sets it.
  cp node_modules/@tensorflow/tfjs-backend-wasm/dist/*.wasm "$GPU/wasm/"
  echo 'globalThis.__dirname = new URL("./wasm/", import.meta.url).pathname;' >"$GPU/prelude.js"
  # 3. The fixtures the parity tests read (micro and ViT-B/16; tiny is left out to stay under 64 MiB).
  cp "$SHARED/fixtures/vit/micro/"{config.json,golden.safetensors,micro.safetensors} "$GPU/fixtures/vit/micro/"
  cp "$SHARED/fixtures/vit/base/golden.safetensors" "$GPU/fixtures/vit/base/"
  cp "$SHARED/anchors/vit_base_patch16_224.noparams.onnx" "$GPU/anchors/"
  # 4. The Vulkan loader (the device README's recipe), downloaded as .deb files for amd64.
  local o="-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64"
  mkdir -p /tmp/amd64/partial
  # shellcheck disable=SC2086
  apt-get $o update >/dev/null
  # shellcheck disable=SC2086
  (cd "$GPU/debs" && apt-get $o download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
  du -sh "$GPU"
  echo "ready: run(command=\"bash scripts/gpu_bringup.sh run\", carry=[\"tmp/gpu\"], timeout_s=580)"
}

run_on_gpu() {
  : "${OUT:=/tmp/out}"
  mkdir -p "$OUT"
  exec > >(tee "$OUT/bringup.log") 2>&1
  cd "$ROOT"
  echo "== machine"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true
  python3 -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__, torch.cuda.get_device_name(0))" || true
  echo "== Vulkan loader"
  for f in "$GPU"/debs/*.deb; do dpkg -x "$f" /; done
  ldconfig
  ldconfig -p | grep libvulkan || echo "no libvulkan after unpacking the debs"
  if [[ -f /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ]]; then
    export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
    export __EGL_VENDOR_LIBRARY_FILENAMES=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
  fi
  echo "== deno"
  xz -dc "$GPU/deno.xz" >/tmp/deno && chmod +x /tmp/deno
  /tmp/deno --version
  export VIT_SHARED="$GPU" DENO_DIR=/tmp/deno_dir XDG_RUNTIME_DIR=/tmp
  echo "== WebGPU adapter"
  /tmp/deno eval 'const a = await navigator.gpu.requestAdapter({ powerPreference: "high-performance" });
    console.log(JSON.stringify(a ? { info: a.info, fallback: a.info?.isFallbackAdapter,
      maxBuffer: a.limits.maxBufferSize, maxBinding: a.limits.maxStorageBufferBindingSize,
      features: [...a.features] } : null));' | tee "$OUT/adapter.json"
  echo "== parity tests (micro + ViT-B/16, webgpu and wasm)"
  timeout 150 /tmp/deno test -A --preload "$GPU/prelude.js" --filter "/micro|ViT-B/" "$GPU/parity_test.js" ||
    echo "PARITY FAILED (exit $?)"
  echo "== bench (webgpu + timm/PyTorch fp32/bf16/fp16 on the same GPU)"
  timeout 240 /tmp/deno run -A --preload "$GPU/prelude.js" "$GPU/bench.js" \
    --models micro,tiny,base --backends webgpu --batches 1,8,32,64 --train-batch 32 --runs 10 --warmup 3 \
    --budget 60 --no-anchor --no-cold-start --no-convert --no-wasm-variants --cache /tmp/bench_cache \
    --json "$OUT/benchmarks.json" --md "$OUT/benchmarks.md" || echo "BENCH FAILED (exit $?)"
  echo "== the WGSL matmul + softmax forced on the GPU (installed only on software adapters by default)"
  timeout 100 /tmp/deno run -A --preload "$GPU/prelude.js" "$GPU/bench.js" \
    --models base --backends webgpu --batches 1,32 --train-batch 0 --runs 5 --warmup 2 --budget 30 \
    --force-wgsl-matmul --no-torch --no-profile --no-anchor --no-cold-start --no-convert --no-wasm-variants \
    --cache /tmp/bench_cache --json "$OUT/wgsl.json" --md "$OUT/wgsl.md" || echo "WGSL BENCH FAILED (exit $?)"
}

case "${1:-}" in
prepare) prepare ;;
run) run_on_gpu ;;
*)
  echo "usage: $0 prepare|run" >&2
  exit 2
  ;;
esac
