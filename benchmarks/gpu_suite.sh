#!/usr/bin/env bash
# The GPU suite: everything detbench wants to know from a CUDA machine, in <= 8 minutes.
#
#   benchmarks/gpu_suite.sh              # on a CUDA machine with torch + torchvision preinstalled
#   benchmarks/gpu_suite.sh --dry-run    # (or GPU_SUITE_DRY_RUN=1) the same steps on CPU, tiny sizes
#   GPU_SUITE_SKIP="compare ddp" ...     # leave out the named steps (each is logged as skipped)
#
# Prepare once, on any machine with internet (the GPU machine has none), from the repository root:
#   pip download -d wheels --only-binary=:all: --python-version 3.11 --platform manylinux2014_x86_64 \
#       pycocotools faster-coco-eval numpy pandas matplotlib hydra-core hydra-joblib-launcher \
#       hydra-submitit-launcher tqdm tensorboard pillow pyyaml tabulate
# (wheels/ is git-ignored; use the GPU machine's Python version; torch/torchvision are not downloaded.)
#
# Writes into $GPU_SUITE_OUT (default benchmarks/results/gpu/, dry run: a temporary folder):
#   speed_table_cuda.md        7 paper detectors, batch 1/8/32/128, fp32 and bf16 (+ bf16-compile rows for
#                              the two small SSDs, where launch overhead matters and CUDA graphs help)
#   ssd300_largest_batch.json  SSD300 end-to-end img/s incl. decode + NMS at the largest batch that fits, bf16
#   compare/ + compare.txt     experiment=compare on the GPU: wall time and AP of the three detectors
#   ddp.txt                    a 2-process DDP smoke run (NCCL), only when 2 GPUs are visible
#   speed_table_cuda_runtimes.md  the paper detectors (width 0.25, R-CNN and Fast R-CNN included) at batch 1/8:
#                              PyTorch fp32 / bf16 on CUDA beside the exported networks in TensorRT (ONNX Runtime's
#                              TensorrtExecutionProvider), only when that provider is there; otherwise suite.log says
#                              "step tensorrt: skipped (...)" with the reason
#   suite.log                  every step's time and exit status; a failed step does not stop the others
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
DRY="${GPU_SUITE_DRY_RUN:-0}"
[[ "${1:-}" == "--dry-run" ]] && DRY=1
PY="${PYTHON:-python}"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

if [[ "$DRY" == 1 ]]; then
  OUT="${GPU_SUITE_OUT:-$(mktemp -d)}"
  DEVICE=cpu; BATCHES="1 2"; ITER=1; WARM=0; START=4
  TABLE_ARGS=(--detectors ssd300 yolov1 --width 0.0625)
  LARGEST_ARGS=(--override detector.model.width=0.0625)
  COMPARE_ARGS=(detector.model.width=0.0625 dataset.train.num_images=16 dataset.val.num_images=8
                train.epochs=1 train.batch_size=8 train.val_every=0 eval.batch_size=8 bench.batch_sizes=[1]
                bench.iterations=1 bench.warmup=0 "hydra.sweeper.params.detector=ssd300_cpu")
  STEP_TIMEOUT=300
else
  OUT="${GPU_SUITE_OUT:-$ROOT/benchmarks/results/gpu}"
  DEVICE=cuda; BATCHES="1 8 32 128"; ITER=10; WARM=3; START=1024
  TABLE_ARGS=(); LARGEST_ARGS=(); COMPARE_ARGS=(); STEP_TIMEOUT=150
fi
mkdir -p "$OUT"
LOG="$OUT/suite.log"
: > "$LOG"
say() { echo "[gpu_suite $(date +%H:%M:%S)] $*" | tee -a "$LOG"; }

step() {  # step NAME TIMEOUT_S COMMAND...: run, time, record the exit status, never abort the suite
  local name="$1" limit="$2"; shift 2
  local start=$SECONDS
  if [[ " ${GPU_SUITE_SKIP:-} " == *" $name "* ]]; then say "step $name: skipped (GPU_SUITE_SKIP)"; return 0; fi
  say "step $name: $*"
  timeout "$limit" "$@" >> "$LOG" 2>&1
  local rc=$?
  say "step $name: exit $rc after $((SECONDS - start)) s"
  return 0
}

say "dry run: $DRY, device $DEVICE, out $OUT"
# 1. dependencies: only torch/torchvision are assumed; the rest comes from wheels/ without an index
if [[ "$DRY" != 1 ]]; then
  if [[ -d wheels ]]; then
    step install 120 "$PY" -m pip install --no-index --find-links wheels -q pycocotools faster-coco-eval numpy \
      pandas matplotlib hydra-core hydra-joblib-launcher hydra-submitit-launcher tqdm tensorboard pillow pyyaml tabulate
  else
    say "no wheels/ folder: assuming the dependencies are installed (see the prepare step above)"
  fi
  "$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name())" \
    | tee -a "$LOG" || { say "no CUDA device visible: stopping (use --dry-run on CPU)"; exit 1; }
  nvidia-smi >> "$LOG" 2>&1 || true
fi
"$PY" -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)" | tee -a "$LOG"

# 2. the speed table, fp32 and bf16 at every batch size, then compiled rows for the two small SSDs
# shellcheck disable=SC2086
step speed_table "$STEP_TIMEOUT" "$PY" benchmarks/speed_table.py --device "$DEVICE" --batch-sizes $BATCHES \
  --modes fp32 bf16 --iterations "$ITER" --warmup "$WARM" --channels-last "${TABLE_ARGS[@]}" \
  --save --out "$OUT/speed_table_$DEVICE.md"
COMPILED=(--detectors ssd300 ssd_mobilenet_v1)
[[ "$DRY" == 1 ]] && COMPILED=(--detectors ssd300 --width 0.0625)
# shellcheck disable=SC2086
step speed_table_compiled "$STEP_TIMEOUT" "$PY" benchmarks/speed_table.py --device "$DEVICE" --batch-sizes $BATCHES \
  --modes bf16 bf16-compile --iterations "$ITER" --warmup "$WARM" --channels-last "${COMPILED[@]}" \
  --save --out "$OUT/speed_table_${DEVICE}_compiled.md"

# 3. SSD300 end to end, decode and NMS included, at the largest batch that fits (target >= 4000 img/s on an H200)
step ssd300_largest_batch 90 "$PY" benchmarks/largest_batch.py --device "$DEVICE" --detector ssd300 --dtype bf16 \
  --start "$START" --iterations "$ITER" --warmup "$WARM" "${LARGEST_ARGS[@]}" --out "$OUT/ssd300_largest_batch.json"

# 4. experiment=compare on this device: wall time and AP per detector
start=$SECONDS
[[ " ${GPU_SUITE_SKIP:-} " == *" compare "* ]] || rm -rf "$OUT/compare"
step compare 240 "$PY" -m experiments.run experiment=compare device="$DEVICE" "hydra.sweep.dir=$OUT/compare" \
  "${COMPARE_ARGS[@]}"
echo "experiment=compare wall time: $((SECONDS - start)) s" > "$OUT/compare.txt"
"$PY" - "$OUT/compare" >> "$OUT/compare.txt" 2>&1 <<'PYEOF'
import json, sys
from pathlib import Path
for path in sorted(Path(sys.argv[1]).glob("*/metrics.json")):
    m = json.loads(path.read_text())
    print(f"{m.get('detector')}: status {m.get('status')}, AP {m.get('map')}, AP50 {m.get('map_50')}, "
          f"train {m.get('train_time_s')} s, device {m.get('device')}")
PYEOF
cat "$OUT/compare.txt" | tee -a "$LOG"

# 5. DDP smoke run: 2 processes, NCCL, when two GPUs are visible
GPUS=$("$PY" -c "import torch; print(torch.cuda.device_count())")
if [[ "$DRY" != 1 && "$GPUS" -ge 2 ]]; then
  step ddp 120 "$PY" -m torch.distributed.run --standalone --nproc_per_node 2 -m experiments.run device=cuda \
    detector=ssd300_cpu dataset=synthetic train.epochs=1 "hydra.run.dir=$OUT/ddp"
  grep -h "AP\|failed\|error" "$LOG" | tail -5 > "$OUT/ddp.txt"
else
  say "step ddp: skipped ($GPUS GPUs visible, dry run $DRY)"
fi
# 6. TensorRT: the exported networks through ONNX Runtime's TensorRT provider beside PyTorch fp32 / bf16 on CUDA
TRT_CHECK=$("$PY" - 2>/dev/null <<'PYEOF'
import importlib.util

import torch

if not torch.cuda.is_available():
    print("no CUDA device visible")
else:
    try:
        import onnxruntime
        providers = onnxruntime.get_available_providers()
    except ImportError:
        providers = None
    if providers and "TensorrtExecutionProvider" in providers:
        print("ok")
    elif importlib.util.find_spec("torch_tensorrt") is not None:
        print(f"torch_tensorrt is installed but ONNX Runtime's TensorrtExecutionProvider is not (providers: "
              f"{providers}); runtime_speed.py runs TensorRT through that provider: install onnxruntime-gpu")
    else:
        print(f"no TensorRT: ONNX Runtime's TensorrtExecutionProvider absent (providers: {providers}) and "
              "torch_tensorrt not installed")
PYEOF
)
TRT_CHECK="$(echo "${TRT_CHECK:-the check itself failed: python could not import torch}" | tail -1)"
if [[ "$DRY" == 1 ]]; then
  say "step tensorrt: skipped (dry run on the CPU; TensorRT check: $TRT_CHECK)"
elif [[ "$TRT_CHECK" != ok ]]; then
  say "step tensorrt: skipped ($TRT_CHECK)"
else
  step tensorrt 300 "$PY" benchmarks/runtime_speed.py --device cuda --runtimes tensorrt --batch-sizes 1 8 \
    --width 0.25 --iterations "$ITER" --warmup "$WARM" --save --out "$OUT/speed_table_cuda_runtimes.md"
fi
say "done in $SECONDS s; results in $OUT"
