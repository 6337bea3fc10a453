#!/usr/bin/env bash
# The main job end to end on the tiny CIFAR-10 sample shipped in the package (offline):
# float training -> QAT -> INT8 teacher -> PPO search for tri-segment maps -> evaluation of the result.
# Pass --data-dir PATH (and more epochs/episodes) to run it on the full data set.
set -euo pipefail
OUT=${OUT:-outputs/demo}
python main.py --mode train_float --model lenet5 --epochs 3 --batch-size 64 --output-dir "$OUT" "$@"
python main.py --mode train_qat --model lenet5 --qat-epochs 2 --batch-size 64 --output-dir "$OUT" "$@"
python main.py --mode export_int8 --model lenet5 --output-dir "$OUT"
python main.py --mode eval_int8 --model lenet5 --output-dir "$OUT" "$@"
python main.py --mode train_ppo_triseg --model lenet5 --episodes 200 --output-dir "$OUT" "$@"
python main.py --mode eval_ppo_int8 --model lenet5 --config-path "$OUT/tri_ppo_int_codes/result.json" --output-dir "$OUT" "$@"
