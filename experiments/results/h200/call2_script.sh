#!/bin/bash
# One device call: versions, attention tests, the main job, the 0.5B figures,
# the 0.5B GRPO step. Each part bounded so later ones still run.
LIMIT=${LIMIT:-500}
PLAT=${PLAT:-cuda}
left() { echo $(( LIMIT - SECONDS )); }
if [ -z "$DRY" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
  ACC="--accel_model=qwen2.5-0.5b"; GRPO="--grpo_model=qwen2.5-0.5b --grpo_prompts=64 --grpo_group=8 --grpo_new_tokens=512 --grpo_micro_batches=8 --repeats=3"; MAINX=""
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv | tee $OUT/nvidia.txt
else
  ACC="--accel_model=tiny --accel_dtype=float32 --accel_train_batch=2 --accel_train_length=16 --accel_decode_batch=2 --accel_prompt=4 --accel_new_tokens=4 --repeats=1"
  GRPO="--grpo_model=tiny --grpo_prompts=4 --grpo_group=2 --grpo_new_tokens=8 --grpo_micro_batches=2 --repeats=1"
  MAINX="--config.warm_start.steps=10 --config.steps=2 --config.eval_questions=8"
fi
export PYTHONUNBUFFERED=1 JAX_PLATFORMS=$PLAT JAX_COMPILATION_CACHE_DIR=/tmp/jaxcache XLA_PYTHON_CLIENT_MEM_FRACTION=0.92
python3 -c "import sys, jax, flax, optax, chex, orbax.checkpoint, ml_collections, math_verify; print(sys.version.split()[0], 'jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, jax.devices())" 2>&1 | tail -2 | tee $OUT/versions.txt
echo "== attention tests t=$SECONDS"
timeout 120 python3 -m pytest -q -p no:cacheprovider tests/models/test_transformer.py -k "attention or cudnn" 2>&1 | tail -30 > $OUT/attention_test.txt
tail -3 $OUT/attention_test.txt
ATT=einsum; REMAT=full
grep -q "cudnn_attention_kernel_equals_the_einsums_on_gpu" $OUT/attention_test.txt || { ATT=auto; REMAT=none; }
[ "$PLAT" = cpu ] && { ATT=auto; REMAT=none; }
echo "== main job t=$SECONDS (attention $ATT)"
rm -rf /tmp/runs/grpo
( time timeout 150 python3 -m experiments.main --config=experiments/configs/grpo.py --workdir=/tmp/runs/grpo --config.quiet=True --config.attention=$ATT $MAINX ) > $OUT/main.txt 2>&1
tail -4 $OUT/main.txt
cp /tmp/runs/grpo/eval.json $OUT/main_eval.json 2>/dev/null
python3 -c "
import json
for f in ('/tmp/runs/grpo/sft/metrics.jsonl', '/tmp/runs/grpo/metrics.jsonl'):
  rows = [json.loads(l) for l in open(f)]
  t = [r['step_time_s'] for r in rows if 'step_time_s' in r]
  print(f, len(t), 'steps', round(sum(t), 1), 's of steps')
" 2>&1 | tail -2 | tee -a $OUT/main.txt
echo "== accelerator t=$SECONDS"
timeout 170 python3 -m experiments.benchmark --accelerator --accel_attention=$ATT --accel_remat=$REMAT $ACC 2>&1 | grep -v "^[WI][0-9]" | tail -20 > $OUT/accelerator.txt
grep "^{" $OUT/accelerator.txt | cut -c1-400; grep -v "^{" $OUT/accelerator.txt | tail -3
echo "== grpo step t=$SECONDS"
timeout $(( $(left) - 3 )) python3 -m experiments.benchmark --grpo --grpo_peers=ugrad --grpo_attention=$ATT $GRPO 2>&1 | grep -v "^[WI][0-9]" | tail -20 > $OUT/grpo_step.txt
grep "^{" $OUT/grpo_step.txt; grep -v "^{" $OUT/grpo_step.txt | tail -3
echo "== done t=$SECONDS"
