#!/usr/bin/env bash
# Reproduces results/lsq/*.json: CIFAR-10, resnet_cifar10, float then LSQ QAT at W8A8/W4A4/W2A2,
# integer-only inference against fake-quant, and the speed benchmark; on the CPU, one thread throughout.
# Usage: TRISEG_DATA_DIR=/path/to/cifar10 bash results/lsq/run.sh   (rerun it to resume)
set -euo pipefail
: "${TRISEG_DATA_DIR:?set TRISEG_DATA_DIR to CIFAR-10 (folder or archive)}"
LSQ="python -m triseg"
R=results/lsq
FLOAT=runs/lsq/resnet_cifar10-float

# run OUT CMD...: skip a finished run, resume an interrupted one
run() {
  local out=$1; shift
  if [ -f "$out/metrics.json" ]; then return; fi
  if [ -f "$out/checkpoint.pt" ]; then "$@" --resume; else "$@"; fi
}

run $FLOAT $LSQ lsq-train --model resnet_cifar10 --epochs 8 --output-dir $FLOAT --device cpu --workers 1
cp $FLOAT/metrics.json $R/float.json
for cfg in "8 2" "4 3" "2 4"; do
  set -- $cfg
  out=runs/lsq/resnet_cifar10-w$1a$1
  run $out $LSQ lsq-qat --model resnet_cifar10 --float-checkpoint $FLOAT/checkpoint.pt \
    --w-num-bits $1 --a-num-bits $1 --epochs $2 --act-step-init lsq --output-dir $out --device cpu --workers 1
  cp $out/metrics.json $R/qat-w$1a$1.json
  [ -f $R/infer-w$1a$1.json ] || $LSQ lsq-infer --checkpoint $out/checkpoint.pt --workers 1 --json $R/infer-w$1a$1.json
done
# a longer W2A2 run (7 QAT epochs)
out=runs/lsq/resnet_cifar10-w2a2-e7
run $out $LSQ lsq-qat --model resnet_cifar10 --float-checkpoint $FLOAT/checkpoint.pt \
  --w-num-bits 2 --a-num-bits 2 --epochs 7 --act-step-init lsq --output-dir $out --device cpu --workers 1
cp $out/metrics.json $R/qat-w2a2-e7.json
[ -f $R/infer-w2a2-e7.json ] || $LSQ lsq-infer --checkpoint $out/checkpoint.pt --workers 1 --json $R/infer-w2a2-e7.json
python benchmarks/bench_lsq.py --threads 1 --batch-size 256 --float-checkpoint $FLOAT/checkpoint.pt \
  --checkpoint runs/lsq/resnet_cifar10-w8a8/checkpoint.pt --checkpoint runs/lsq/resnet_cifar10-w4a4/checkpoint.pt \
  --checkpoint runs/lsq/resnet_cifar10-w2a2/checkpoint.pt --json $R/bench.json
