#!/usr/bin/env bash
# Issue 16 on the accelerator machine in ONE call of the device tool (docs/benchmarks.md, "GPU (issue 16)"):
#
#   here:   benchmarks/gpu/wheels.sh            fills .gpu-wheels/ (git-ignored, ~31 MiB): what is missing there
#   there:  carry [".gpu-wheels"], timeout_s 600, command: bash benchmarks/gpu/run.sh
#
# Writes into $OUT, which comes back (at most 8 files): run.log (every step's output, its exit code and
# time), gen.json (the 7B), deepseekv3.json, doctor.json, gpu-tests.txt, and dense.json and embed.json
# when benchmarks/gpu/dense.py and embed.py exist. The generation figures come first, so a run cut short
# still has them; every step runs under its own `timeout`, and all of them within CAIRN_GPU_RUN_BUDGET
# seconds (default 540: the device tool stops a command at 600).
#
# Time, estimated for an H100 (nothing measured there yet; bf16, transformers eager, no CUDA graphs):
#   info + wheels             ~20 s
#   7B generation             ~2 min, 4 min at most (--max-seconds 200 skips the levels not started by then).
#                             Startup ~25 s: imports, CUDA, 7.6B random bf16 weights built on the card
#                             (15.2 GB). A decode step is bound by kernel launches, not by the card:
#                             ~1,200 kernels a step (28 layers × ~43) at ~15 µs ≈ 20 ms, against
#                             15.2 GB of weights read at ~3 TB/s ≈ 5 ms. Prefill of ~600-token prompts:
#                             15 GFLOP a token, ~0.6 PFLOP at c=64 ≈ 1.5 s at ~400 TFLOP/s. So a run of
#                             128 new tokens takes ~2.7 s at c=1 and ~5 s at c=64; ×3 repeats × 2 paths
#                             plus warm-ups: ~90 s over the four levels.
#   DeepSeek-V3 small (0.7B)  ~1 min, 2.5 at most: tiny matrices, but the eager MoE loops over the experts
#                             a token hit (up to 32 a layer at c=64): launch-bound, ~30 ms a step.
#   doctor                    ~15 s (parameters counted on the meta device; manage.py's too where Django is)
#   gpu tests                 ~1 min (tiny models on the card, fp32 and bf16; the tiny benchmark)
#   dense.py, embed.py        what is left, at most 150 s each
#
# CAIRN_GPU_RUN_TINY=1: every step tiny on this machine's CPU (tests/gpu/test_run_script.py), nothing
# installed; OUT defaults to a new temporary folder. PYTHON: the interpreter (default python3).
set -u
cd "$(dirname "$0")/../.." || exit 1

TINY=${CAIRN_GPU_RUN_TINY:-0}
PY=${PYTHON:-python3}
BUDGET=${CAIRN_GPU_RUN_BUDGET:-540}
OUT=${OUT:-$(mktemp -d -t cairn-gpu-out-XXXXXX)}
WORK=$(mktemp -d -t cairn-gpu-work-XXXXXX)
LOG=$OUT/run.log
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export CAIRN_DATA_DIR=$WORK/data  # manage.py and Django's tests: a scratch data directory

log() { echo "$*" >>"$LOG"; }

# step NAME LIMIT_S MIN_S COMMAND...: run under `timeout`, within what is left of the budget
# (skipped when less than MIN_S is left); its output goes to run.log, or is appended to $STEP_OUT
# when that is set (then its last lines go to run.log).
step() {
    local name=$1 limit=$2 least=$3
    shift 3
    local left=$((BUDGET - SECONDS - 5))
    if [ "$left" -lt "$limit" ]; then limit=$left; fi
    if [ "$limit" -lt "$least" ]; then
        log "== $name: SKIPPED, ${left}s of the ${BUDGET}s budget left"
        return 0
    fi
    log ""
    log "== $name (limit ${limit}s, at ${SECONDS}s) $*"
    local start=$SECONDS rc
    timeout -k 10 "$limit" "$@" >>"${STEP_OUT:-$LOG}" 2>&1
    rc=$?
    if [ -n "${STEP_OUT:-}" ]; then tail -n 3 "$STEP_OUT" >>"$LOG"; fi
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then log "== $name: TIMED OUT after $((SECONDS - start))s"; fi
    log "== $name: rc=$rc in $((SECONDS - start))s"
    return 0
}

django_ready() {
    DJANGO_SETTINGS_MODULE=config.settings "$PY" -c "import django; django.setup()" >/dev/null 2>&1
}

log "Cairn issue 16 GPU run, $(date -u +%FT%TZ), tiny=$TINY, budget ${BUDGET}s, commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi >>"$LOG" 2>&1
    log "card: $(nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap --format=csv,noheader 2>&1)"
else
    log "card: none (no nvidia-smi)"
fi
"$PY" -c "import platform, torch, transformers; print('python', platform.python_version(), '| torch', torch.__version__, \
'| cuda', torch.version.cuda, '| transformers', transformers.__version__, '| device', \
torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu')" >>"$LOG" 2>&1

# --- the wheels: into the machine's environment (else a folder on PYTHONPATH) ---
if [ "$TINY" = 1 ]; then
    log "tiny: no wheels installed"
elif ls .gpu-wheels/*.whl >/dev/null 2>&1; then
    step wheels 120 10 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
        --root-user-action=ignore --find-links .gpu-wheels .gpu-wheels/*.whl
    if ! "$PY" -c "import django, faiss" >/dev/null 2>&1; then
        step wheels-target 120 10 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
            --target "$WORK/site" .gpu-wheels/*.whl
        export PYTHONPATH=$WORK/site${PYTHONPATH:+:$PYTHONPATH}
    fi
else
    log "no .gpu-wheels/ carried: nothing installed (run benchmarks/gpu/wheels.sh, carry .gpu-wheels)"
fi

# --- 1. generation: the 7B first (the levels the targets need first), then the small DeepSeek-V3 ---
if [ "$TINY" = 1 ]; then
    GEN_7B=(--tiny --concurrency 1,4 --new-tokens 4 --repeats 1 --warmup-tokens 2)
    GEN_V3=(--tiny --concurrency 1,4 --new-tokens 4 --repeats 1 --warmup-tokens 2)
else
    GEN_7B=(--concurrency 1,16,4,64 --new-tokens 128 --repeats 3 --max-seconds 200)
    GEN_V3=(--concurrency 1,16,4,64 --new-tokens 64 --repeats 2 --max-seconds 100)
fi
step generation-7b 270 60 "$PY" benchmarks/gpu/generation.py --arch qwen2-7b "${GEN_7B[@]}" --json "$OUT/gen.json"
step generation-deepseek-v3 150 40 "$PY" benchmarks/gpu/generation.py --arch deepseek-v3-small "${GEN_V3[@]}" \
    --json "$OUT/deepseekv3.json"

# --- 2. the doctor: Django-free (the JSON), then the management command itself where Django is ---
step doctor 90 20 "$PY" benchmarks/gpu/doctor.py --config-dir "$WORK/models" --json "$OUT/doctor.json"
if django_ready; then
    step cairn_doctor 60 20 "$PY" manage.py cairn_doctor --model "$WORK/models/DeepSeek-R1-Distill-Qwen-7B"
else
    log "== cairn_doctor: SKIPPED, django.setup() fails here (Django or an installed app missing)"
fi

# --- 3. the gpu tests: the Django-free folder, then the ones that need pytest-django ---
STEP_OUT=$OUT/gpu-tests.txt step gpu-tests 180 30 \
    "$PY" -m pytest -p no:django -p no:cacheprovider --confcutdir tests/gpu -m gpu -q -rA tests/gpu
if django_ready && "$PY" -c "import pytest_django" >/dev/null 2>&1; then
    STEP_OUT=$OUT/gpu-tests.txt step gpu-tests-django 120 30 \
        "$PY" -m pytest -p no:cacheprovider -m gpu -q -rA tests/inference/test_doctor.py
else
    log "== gpu-tests-django: SKIPPED, no Django or pytest-django here"
    echo "tests/inference/test_doctor.py (gpu): not run, no Django or pytest-django here" >>"$OUT/gpu-tests.txt"
fi

# --- 4. the dense leg (1M clustered vectors: real embeddings have structure; the random worst case caps
#        the CPU's compressed scan below 99 % recall, which is the CPU's figure, not the GPU's) and
#        ingestion through the personal worker vs bare encode (the bundled model's shape, random weights:
#        its 88 MB of weights cannot travel; wheels.sh exports the shape into .gpu-wheels/) ---
if [ "$TINY" = 1 ]; then
    DENSE=(--n 5000 --queries 50 --device cpu --data clustered)
    EMBED=(--docs 2 --pages 2 --device cpu)
else
    DENSE=(--n 1000000 --queries 1000 --data clustered)
    EMBED=(--docs 200 --pages 12)
    if [ -d .gpu-wheels/minilm-shape ]; then EMBED+=(--random-weights-from .gpu-wheels/minilm-shape); fi
fi
step dense 200 30 "$PY" benchmarks/gpu/dense.py "${DENSE[@]}" --json "$OUT/dense.json"
step embed 150 30 "$PY" benchmarks/gpu/embed.py "${EMBED[@]}" --json "$OUT/embed.json"

log ""
log "== done in ${SECONDS}s; in \$OUT:"
ls -l "$OUT" >>"$LOG" 2>&1
rm -rf "$WORK"
echo "$OUT"
