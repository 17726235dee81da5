#!/usr/bin/env bash
# The GPU session's runs for issue 12: two stages, each under 10 minutes (one device call each) on
# one H100/H200-class GPU, every JSON and log into $OUT. Not run on the project's CPU machines.
#
#   bash benchmarks/gpu_step.sh            # stage "step" (default); OUT defaults to ./gpu-step-out
#   STAGE=train bash benchmarks/gpu_step.sh
#   STAGE=vram bash benchmarks/gpu_step.sh     # issue 20: --vram's presets, peak memory and step time
#
# Stage "step" (benchmarks/step.py; full-size architectures, random weights, nothing downloaded):
#   1. sd   tiny, CUDA, 2 steps              smoke test (seconds): the harness works on this machine
#   2. sd   512 px, batch 4, bf16, eager     (SD 1.5 UNet + CLIP-L)
#   3. sdxl 768 px, batch 4, bf16, eager     (the paper's main setting: SDXL UNet + CLIP-L + bigG)
#   4. sdxl 768 px, batch 4, bf16, --compile (regional: unet.compile_repeated_blocks(), ~20 s to compile)
#   Each JSON also holds step_deferred_ms (steps launched back to back, read once, as Trainer.fit
#   runs them) and syncs_per_launched_step (CUDA sync debug mode: how many host syncs remain in a
#   launched step, and which lines make them).
# Stage "train":
#   5. sdxl 768 px, batch 4, bf16, --compile, 400 steps through `dti train` (benchmarks/gpu_train.py):
#      load from disk to saved concept, target <= 75 s (--no-validation: the end-of-run sample grid
#      runs the compiled UNet at a new batch shape, one more compilation, not part of the training)
#   6. K = 1, 8 concepts at once vs sequential, full-size SDXL 768 px, batch 1 per concept (benchmarks/multi.py), target >= 2x
# Stage "vram" (benchmarks/gpu_vram.py; issue 20, under 10 minutes): for SDXL on 8 GB, SANA 1.6B and
#   FLUX.2 klein 4B on 12 GB, FLUX.1-dev on 16 and 12 GB, Qwen-Image and HiDream-I1 on 24 GB, the
#   library's --vram choice on a full-size random-weight pipeline, 4 steps: torch.cuda.max_memory_allocated
#   after setup against the estimate, and the median step time; 75 s a case, 7 cases. Needs ~64 GiB of host memory (HiDream's
#   and Qwen-Image's bf16 weights wait there) and torchao / bitsandbytes for int8 / nf4.
# Expected from ENVIRONMENT.md (H200): SDXL UNet fwd+bwd at this size ~220-250 ms eager, ~125 ms
# compiled; SD 1.5 ~100 ms. Each run has its own time limit, so one hang cannot eat the session.
#
# Dependencies: torch with CUDA, transformers, and diffusers + the openai-clip vocabulary. The GPU
# machine measured before had no diffusers and no network; carry them from a CPU checkout:
#   mkdir -p build/gpu-deps && cp -r .venv/lib/python3.11/site-packages/{diffusers,clip} build/gpu-deps/
#   find build/gpu-deps -name __pycache__ -prune -exec rm -rf {} +    # ~32 MB; carry "build/gpu-deps"
# (both are pure Python). dti itself comes from src/ of the working tree.
set -u
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu-step-out}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src:$PWD/build/gpu-deps${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 TOKENIZERS_PARALLELISM=false
PY="${PYTHON:-$(command -v python || command -v python3)}"
DATE="$(date -u +%Y-%m-%d)"

{
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv || true
  "$PY" -c "import torch, diffusers, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0)); print('diffusers', diffusers.__version__, 'transformers', transformers.__version__)"
} 2>&1 | tee "$OUT/machine.txt"
"$PY" -c "import diffusers, transformers, torch, clip, dti" || { echo "missing dependencies (see the header of this script)" | tee -a "$OUT/machine.txt"; exit 2; }

status=0
bench() {  # bench NAME LIMIT_SECONDS ARGS...
  local name="$1" limit="$2"
  shift 2
  echo "=== $name: benchmarks/step.py $*" | tee -a "$OUT/summary.txt"
  timeout "$limit" "$PY" benchmarks/step.py "$@" --device cuda --json "$OUT/step-$name-$DATE.json" >"$OUT/$name.log" 2>&1
  local rc=$?
  grep -v -e "Writing model shards" -e "ordinary word" -e torchvision "$OUT/$name.log" | tail -n 6 | tee -a "$OUT/summary.txt"
  [ "$rc" -eq 0 ] || { echo "!!! $name exited $rc" | tee -a "$OUT/summary.txt"; status=1; }
}

if [ "${STAGE:-step}" = vram ]; then
  for case in sdxl:8 sana:12 flux2_klein:12 flux:16 flux:12 qwenimage:24 hidream:24; do
    echo "=== vram $case: benchmarks/gpu_vram.py" | tee -a "$OUT/summary.txt"
    timeout 75 "$PY" benchmarks/gpu_vram.py --device cuda --cases "$case" --steps 4 --json "$OUT/vram-${case/:/-}-$DATE.json" \
      2>&1 | grep '^{' | tee -a "$OUT/summary.txt"
    [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
  done
elif [ "${STAGE:-step}" = step ]; then
  bench sd-tiny-cuda 60 --family sd --tiny --steps 2 --warmup 1
  bench sd-full-512-b4-bf16 120 --family sd --resolution 512 --batch 4 --precision bf16 --steps 10 --warmup 3
  bench sdxl-full-768-b4-bf16 150 --family sdxl --resolution 768 --batch 4 --precision bf16 --steps 10 --warmup 3
  bench sdxl-full-768-b4-bf16-compile 220 --family sdxl --resolution 768 --batch 4 --precision bf16 --compile --steps 10 --warmup 3
else
  echo "=== sdxl 400 steps, compile: benchmarks/gpu_train.py" | tee -a "$OUT/summary.txt"
  timeout 300 "$PY" benchmarks/gpu_train.py --family sdxl --device cuda --steps 400 --batch 4 --resolution 768 --compile --no-validation \
    --crop-positions 2 --workdir "${TMPDIR:-/tmp}" --json "$OUT/train-sdxl-400-compile-$DATE.json" 2>&1 | tail -n 3 | tee -a "$OUT/summary.txt"
  [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
  echo "=== multi K=1,8 sdxl 768: benchmarks/multi.py" | tee -a "$OUT/summary.txt"
  timeout 240 "$PY" benchmarks/multi.py --family sdxl --device cuda --full --resolution 768 --batch 1 --precision bf16 --ks 1,8 \
    --steps 3 --warmup 1 --reps 1 --mixes batch --json "$OUT/multi-sdxl-768-$DATE.json" --md "$OUT/multi-sdxl-768-$DATE.md" \
    2>&1 | tail -n 12 | tee -a "$OUT/summary.txt"
  [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
fi
exit "$status"
