#!/usr/bin/env bash
# What produced multirun/reference/large, multirun/reference/overfitting and the GPU benchmark, on one
# lent GPU within a fixed time, brought up to date for the next lease: the benchmark first, alone on the
# card (replicas up to 32 at the default preset, the large TransformerLM against nanoGPT's best settings,
# cached sampling), then the large-preset sweep of the seven models (BitNetLM included) and the
# overfitting experiment side by side (one process per job, joblib launcher).
# Jobs still running at the deadline get SIGTERM, save their checkpoint, and resume on a re-run.
#
#   DRAKE_CSV=/path/to/Drake.csv bash multirun/reference/gpu.sh OUT_DIR [seconds for the sweeps]
set -u
OUT=${1:?usage: gpu.sh OUT_DIR [sweep seconds]}
SWEEP_SECONDS=${2:-420}
DATA=${DRAKE_CSV:-../shared/data/Drake.csv}
PY=${PYTHON:-python3}
EXTRA=${EXTRA:-}  # e.g. "train.iters=20 train.eval_interval=10" for a dry run
mkdir -p "$OUT" multirun/gpu
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$OUT/gpu.txt" 2>&1 || echo "no nvidia-smi" > "$OUT/gpu.txt"
"$PY" -c "import torch; print(torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu')" >> "$OUT/gpu.txt"
cat "$OUT/gpu.txt"

if [ "${SKIP_BENCH:-0}" != 1 ]; then
  timeout 240 "$PY" benchmarks/bench.py --scales default large --models TransformerLM --data "$DATA" --seconds 2 \
    --rounds 3 --nanogpt-best --gen-chars 500 --precision-check 500 --precision-scale large --ablation-variants \
    --out "$OUT/bench" > "$OUT/bench.log" 2>&1
  tail -n 25 "$OUT/bench.log"
fi

start=$(date +%s)
common=(data=csv "data.path=$DATA" logger=none train.threads=1 hydra/launcher=joblib $EXTRA)
setsid "$PY" run.py -m 'model=glob(*)' scale=large hydra.launcher.n_jobs=6 hydra.sweep.dir=multirun/gpu/large \
  "${common[@]}" > "$OUT/large.log" 2>&1 &
large=$!
# remedy=none is the large TransformerLM job above itself (same config, same seed), so it is not run twice.
setsid "$PY" run.py -m experiment=overfitting remedy=early_stopping,lr_decay,more_dropout,all \
  hydra.launcher.n_jobs=4 hydra.sweep.dir=multirun/gpu/overfitting \
  paths.registry_dir=multirun/gpu/overfitting_registry "${common[@]}" > "$OUT/overfitting.log" 2>&1 &
overfit=$!
while kill -0 $large 2>/dev/null || kill -0 $overfit 2>/dev/null; do
  if [ $(( $(date +%s) - start )) -ge "$SWEEP_SECONDS" ]; then
    echo "deadline: stopping the sweeps (their jobs checkpoint and can resume)"
    kill -TERM -- -$large -$overfit 2>/dev/null
    sleep 45
    kill -KILL -- -$large -$overfit 2>/dev/null
    break
  fi
  sleep 5
done
echo "sweeps ran $(( $(date +%s) - start )) s"
for sweep in large overfitting; do "$PY" -m drakegpt.report "multirun/gpu/$sweep"; cat "multirun/gpu/$sweep/summary.md"; done

if ls registry/TransformerLM_large/*.safetensors > /dev/null 2>&1; then
  "$PY" run.py task=generate model=TransformerLM scale=large data=csv "data.path=$DATA" generate.length=1000 seed=6 \
    "paths.registry_dir=$PWD/registry" > "$OUT/generate.log" 2>&1
  cp inference/generation_TransformerLM_scaled_*.txt "$OUT/" 2>/dev/null
fi
tar czf "$OUT/results.tar.gz" --exclude=checkpoints --exclude=.hydra --exclude='*.pt' multirun/gpu
ls -la "$OUT"
