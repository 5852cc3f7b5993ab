#!/bin/bash
# The next GPU call of issue 29 (item 9), in the issue's order, one call:
#   LIMIT=470 bash experiments/results/gpu_next/script.sh
# from the repository root, the missing packages carried as wheels in .whl/
# (README.md beside this file). Every part has its own bound, so a slow part
# leaves the later ones their time; figures land in $OUT.
# Checked on a CPU before the call, at toy sizes:
#   DRY=1 PLAT=cpu OUT=/tmp/out LIMIT=600 bash experiments/results/gpu_next/script.sh
LIMIT=${LIMIT:-470}
PLAT=${PLAT:-cuda}
OUT=${OUT:?set OUT}
left() { echo $(( LIMIT - SECONDS )); }
bound() { local b=$1 l; l=$(( $(left) - ${2:-0} )); echo $(( b < l ? b : l )); }
if [ -z "$DRY" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
  ACC="--accel_model=qwen2.5-0.5b --repeats=3"
  VOCAB="--vocab_model=qwen2.5-0.5b --vocab_prompts=64 --vocab_group=8 --vocab_new_tokens=512 --repeats=2"
  MAINX=""; ATT=cudnn
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv | tee $OUT/nvidia.txt
else
  export PYTHONPATH=$PWD
  ACC="--accel_model=tiny --accel_dtype=float32 --accel_train_batch=2 --accel_train_length=16 --accel_prompt=4 --accel_new_tokens=4 --repeats=1"
  VOCAB="--vocab_model=tiny --vocab_prompts=2 --vocab_group=2 --vocab_prompt_len=4 --vocab_new_tokens=4 --vocab_micro_batches=1 --repeats=1"
  MAINX="--config.warm_start.steps=10 --config.steps=2 --config.eval_questions=8"; ATT=auto
fi
export PYTHONUNBUFFERED=1 JAX_PLATFORMS=$PLAT JAX_COMPILATION_CACHE_DIR=/tmp/jaxcache XLA_PYTHON_CLIENT_MEM_FRACTION=0.92
python3 -c "import sys, jax, flax, optax, orbax.checkpoint, ml_collections, math_verify, tensorboardX, qwix; print(sys.version.split()[0], 'jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, jax.devices())" 2>&1 | tail -2 | tee $OUT/versions.txt

echo "== 1. the main job as it stands t=$SECONDS"
rm -rf /tmp/runs/grpo
( time timeout $(bound 150 300) python3 -m experiments.main --config=experiments/configs/grpo.py --workdir=/tmp/runs/grpo --config.quiet=True $MAINX ) > $OUT/main.txt 2>&1
tail -5 $OUT/main.txt
python3 - <<'PY' 2>&1 | tee -a $OUT/main.txt
import collections, json
for f in ("/tmp/runs/grpo/sft/metrics.jsonl", "/tmp/runs/grpo/metrics.jsonl"):
  try:
    rows = [json.loads(l) for l in open(f)]
  except OSError as e:
    print(f, "missing:", e); continue
  phases = collections.Counter()
  for r in rows:
    phases.update({k: v for k, v in r.items() if k.startswith("time/")})
  print(f, len(rows), "steps;", round(sum(r["step_time_s"] for r in rows), 1),
        "s of steps; first step", {k: round(v, 2) for k, v in rows[0].items() if k.startswith("time/") or k == "step_time_s"},
        "; sums", {k: round(v, 1) for k, v in phases.items()})
PY

echo "== 2-3. training MFU (cudnn, remat none, then dots) and decode (64, then 512) t=$SECONDS"
timeout $(bound 110 150) python3 -m experiments.perf.benchmark --accelerator --accel_attention=$ATT --accel_remat=none --accel_decode_batch=64 $ACC > $OUT/accel_none.txt 2>&1
grep "^{" $OUT/accel_none.txt | cut -c1-500; grep -v "^{" $OUT/accel_none.txt | grep -v "^[WI][0-9]" | tail -3
timeout $(bound 110 100) python3 -m experiments.perf.benchmark --accelerator --accel_attention=$ATT --accel_remat=dots --accel_decode_batch=512 $ACC > $OUT/accel_dots.txt 2>&1
grep "^{" $OUT/accel_dots.txt | cut -c1-500; grep -v "^{" $OUT/accel_dots.txt | grep -v "^[WI][0-9]" | tail -3

echo "== 4. the whole 0.5B GRPO step with its phases t=$SECONDS"
timeout $(bound 150 5) python3 -m experiments.perf.benchmark --grpo_vocab $VOCAB > $OUT/grpo_vocab.txt 2>&1
grep "^{" $OUT/grpo_vocab.txt; grep -v "^{" $OUT/grpo_vocab.txt | grep -v "^[WI][0-9]" | tail -3
echo "== done t=$SECONDS"
