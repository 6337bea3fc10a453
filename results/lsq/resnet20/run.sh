#!/usr/bin/env bash
# Reproduces results/lsq/resnet20/*.json (issue 14): ResNet-20 float for 80 epochs, then LSQ QAT W8A8 (3 epochs),
# W4A4 (6) per tensor and with --per-channel-weights, and W2A2 (15) with --per-channel-weights, each compared with
# the integer engine on the test split. One torch thread; rerun it to resume (every step continues its checkpoint).
# Usage: TRISEG_DATA_DIR=/path/to/cifar10 bash results/lsq/resnet20/run.sh
# --amp (bfloat16 autocast) speeds float training about 1.9x on CPUs with native bf16 (AVX512-BF16/AMX); drop it elsewhere.
set -euo pipefail
: "${TRISEG_DATA_DIR:?set TRISEG_DATA_DIR to CIFAR-10 (folder or archive)}"
R=results/lsq/resnet20
L=runs/lsq/resnet20
python -m triseg lsq-train --model resnet_cifar10 --epochs 80 --amp --output-dir $L-float --workers 1 --device cpu \
  --resume-or-start
cp $L-float/metrics.json $R/float.json
for cfg in "8 3 " "4 6 " "4 6 --per-channel-weights" "2 15 --per-channel-weights"; do
  set -- $cfg
  out=$L-w$1a$1${3:+-pc}
  python -m triseg lsq-qat --model resnet_cifar10 --float-checkpoint $L-float/checkpoint.pt --w-num-bits $1 \
    --a-num-bits $1 --epochs $2 ${3:-} --output-dir $out --workers 1 --device cpu --resume-or-start
  cp $out/metrics.json $R/qat-$(basename $out).json
  python -m triseg lsq-infer --checkpoint $out/checkpoint.pt --workers 1 --json $R/infer-$(basename $out).json
done
