#!/usr/bin/env bash
# The GPU suite: one command on a fresh H100/H200 machine with a CUDA build of torch, from a
# clean checkout, that builds the CUDA op, runs the GPU tests and the benchmarks, and writes
# one markdown report (device, driver, torch and CUDA versions, every table):
#
#   bash bench/gpu_suite.sh OUT_DIR             # GPU: at most ~8 minutes (SUITE_BUDGET_S=470)
#   bash bench/gpu_suite.sh OUT_DIR --dry-run   # CPU: the same flow on the tiny preset, < 2 min
#
# -> OUT_DIR/gpu_report.md and one OUT_DIR/<step>.log per step.
#
# Every step is time-boxed (`timeout`) and bounded by what is left of the suite budget; a
# failed or timed-out step is recorded and the next one runs; a step that needs something
# missing is skipped with the reason in the report. Steps run in order of importance, so a
# slow build costs the last (least important) steps first.
# Nothing is downloaded: wheels the machine lacks come from .whl/ (bench/gpu_wheels.sh).
set -u -o pipefail

OUT=${1:?usage: bash bench/gpu_suite.sh OUT_DIR [--dry-run]}
DRY=0
[[ "${2:-}" == "--dry-run" ]] && DRY=1
PY=${PYTHON:-python3}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO" || exit 1
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
REPORT="$OUT/gpu_report.md"
BUDGET=${SUITE_BUDGET_S:-470}
(( DRY )) && BUDGET=${SUITE_BUDGET_S:-110}
START=$SECONDS
export SUITE_SITE="$OUT/site"          # carried wheels unpacked here when there is no pip
export PYTHONPATH="$REPO:$SUITE_SITE${PYTHONPATH:+:$PYTHONPATH}"
export PIP_BREAK_SYSTEM_PACKAGES=1 PIP_NO_INPUT=1 PIP_DISABLE_PIP_VERSION_CHECK=1
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}
PYTEST=("$PY" -m pytest -q -p no:cacheprovider -p no:logging -o addopts= -W ignore::DeprecationWarning)
PASSED=0; FAILED=0; SKIPPED=0

say() { printf '%s\n' "$*" >> "$REPORT"; }

# step NAME SECONDS CMD...: run CMD under `timeout`, log to OUT/NAME.log, report status + tables
step() {
    local name=$1 box=$2; shift 2
    local left=$(( BUDGET - (SECONDS - START) ))
    if (( left < 10 )); then
        say "### $name: not run (suite budget of ${BUDGET} s spent)"; say ''
        SKIPPED=$((SKIPPED + 1)); return 0
    fi
    (( box > left )) && box=$left
    local t0=$SECONDS rc status
    echo "[gpu_suite] $name (at most ${box} s)" >&2
    timeout -k 10 "$box" "$@" > "$OUT/$name.log" 2>&1
    rc=$?
    case $rc in
        0) status=ok; PASSED=$((PASSED + 1)) ;;
        124|137) status="TIMED OUT after ${box} s"; FAILED=$((FAILED + 1)) ;;
        *) status="FAILED (exit $rc)"; FAILED=$((FAILED + 1)) ;;
    esac
    say "### $name: $status ($(( SECONDS - t0 )) s)"; say ''
    say '```'; say "$*"; say '```'; say ''
    if grep -q '^|' "$OUT/$name.log"; then            # the step's markdown tables, as they are
        grep -E '^\||^[A-Za-z0-9_].* on (cuda|cpu)|^Six |^skip reasons' "$OUT/$name.log" >> "$REPORT"
        say ''
    fi
    if [[ $status != ok ]] || ! grep -q '^|' "$OUT/$name.log"; then
        say '```'; tail -n 25 "$OUT/$name.log" | cut -c1-300 >> "$REPORT"; say '```'; say ''
    fi
    return 0
}

skip() {  # skip NAME REASON
    say "### $1: skipped: $2"; say ''
    SKIPPED=$((SKIPPED + 1))
}

# ------------------------------------------------------------------ environment
{
    echo "# GPU suite report"
    echo
    echo "$(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')" \
         "$(git status --porcelain 2>/dev/null | grep -q . && echo '(with local changes)')," \
         "mode: $( (( DRY )) && echo 'dry run on the CPU (tiny preset)' || echo GPU), budget ${BUDGET} s"
    echo
    echo '```'
    if command -v nvidia-smi > /dev/null; then
        nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv 2>&1 | head -5
    else
        echo 'nvidia-smi: not available'
    fi
    "$PY" - <<'EOF' 2>&1
import platform, sys
print('python', sys.version.split()[0], platform.platform())
try:
    import torch
    print('torch', torch.__version__, 'CUDA', torch.version.cuda, 'cuDNN',
          torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None)
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        print('device', torch.cuda.get_device_name(0), f'sm_{p.major}{p.minor}',
              f'{p.total_memory / 2**30:.0f} GiB', 'devices:', torch.cuda.device_count())
    else:
        print('device: no CUDA device')
    import numpy; print('numpy', numpy.__version__)
except Exception as error:
    print('torch does not import:', error)
EOF
    echo "CPU: $(getconf _NPROCESSORS_ONLN) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
    echo '```'
    echo
} >> "$REPORT"

HAS_CUDA=$("$PY" -c 'import torch; print(int(torch.cuda.is_available()))' 2>/dev/null || echo 0)
if (( DRY )); then HAS_CUDA=0; fi
ARCH=$("$PY" -c 'import torch; p = torch.cuda.get_device_capability(0); print(f"{p[0]}.{p[1]}+PTX")' 2>/dev/null || echo '')

# ------------------------------------------------------------------ 1. carried wheels
install_wheels() {
    "$PY" - "$REPO/.whl" <<'EOF'
import glob, importlib.metadata as md, os, re, subprocess, sys
wheels = sorted(glob.glob(os.path.join(sys.argv[1], '*.whl')))
missing = []
for wheel in wheels:
    name = re.split(r'-\d', os.path.basename(wheel))[0].replace('_', '-').lower()
    try:
        md.version(name)
        print(f'{name}: already installed ({md.version(name)})')
    except md.PackageNotFoundError:
        missing.append(wheel)
if missing:
    pip = subprocess.run([sys.executable, '-m', 'pip', '--version'], capture_output=True).returncode == 0
    if pip:
        subprocess.check_call([sys.executable, '-m', 'pip', 'install', '--no-deps', '--no-index', *missing])
    else:                               # no pip: unpack the wheels onto the suite's PYTHONPATH
        import zipfile
        site = os.environ['SUITE_SITE']
        for wheel in missing:
            zipfile.ZipFile(wheel).extractall(site)
        print(f'no pip: unpacked into {site}')
print(f'installed {len(missing)} of {len(wheels)} carried wheels')
EOF
}
if compgen -G "$REPO/.whl/*.whl" > /dev/null; then
    if (( DRY )); then skip wheels 'dry run: the development environment has its packages'
    else step wheels 90 install_wheels; fi
else
    skip wheels 'no .whl/ folder (bench/gpu_wheels.sh makes one): steps needing a missing package fail below with the import error'
fi
MISSING=$("$PY" - <<'EOF' 2>/dev/null
import importlib.util
print(' '.join(m for m in ('pytest', 'PIL', 'tqdm', 'yaml', 'simplejpeg', 'rosbags')
               if importlib.util.find_spec(m) is None))
EOF
)
[[ -n "$MISSING" ]] && say "Python modules missing after the wheels step: $MISSING" && say ''

# ------------------------------------------------------------------ 2. build the CUDA op
build_op() {
    # pip's editable build; without pip (or if it fails) the just-in-time build into the cache
    export TORCH_CUDA_ARCH_LIST="$ARCH" MAX_JOBS=$(getconf _NPROCESSORS_ONLN)
    { "$PY" -m pip install --no-build-isolation --no-deps -e . \
        || { echo '[build_op] pip install failed: python -m sparsebev_core.ops.build'; "$PY" -m sparsebev_core.ops.build; }; } \
        && "$PY" -c 'from sparsebev_core import ops; b = ops.available_backends(); print("backends:", b); assert "cuda" in b, ops.msmv_sampling._cuda_load_error'
}
if (( HAS_CUDA )); then step build_op 200 build_op
else skip build_op 'no CUDA device: the torch sampling backend runs (the kernels are checked on the CPU by the g++ harness in test_msmv_sampling_cuda.py)'; fi

# ------------------------------------------------------------------ 3. tests and benchmarks
if (( HAS_CUDA )); then
    P=r50_nuimg_704x256; DEV=cuda; PREC=fp16; N=100; W=10; FRAMES=120
    step op_tests 100 env SPARSEBEV_REQUIRE_CUDA_OP=1 "${PYTEST[@]}" test/test_msmv_sampling_cuda.py test/test_cuda_fallback.py
    step timing_r50_900q 90 "$PY" -m sparsebev_cli.cli timing --preset $P --device $DEV --data rig --compare --fast-precision $PREC --samples $N --warmup $W
    step pipeline_r50 60 "$PY" bench/pipeline.py --preset $P --device $DEV --precision $PREC --frames $FRAMES
    step sampling_bench 60 "$PY" bench/sampling.py
    step parity_cuda 90 "${PYTEST[@]}" test/test_parity.py -k cuda
    step fast_path_tests 120 "${PYTEST[@]}" test/test_fast_path.py test/test_precision.py test/test_device_preprocess.py -k 'cuda or gpu'
    step timing_r50_400q 60 "$PY" -m sparsebev_cli.cli timing --preset $P --num-queries 400 --device $DEV --data rig --compare --fast-precision $PREC --samples $N --warmup $W
    step timing_r101_1408x512 90 "$PY" -m sparsebev_cli.cli timing --preset r101_nuimg_1408x512 --device $DEV --data rig --compare --fast-precision $PREC --samples 50 --warmup 5
    step timing_r50_900q_compiled 120 "$PY" -m sparsebev_cli.cli timing --preset $P --device $DEV --data rig --compare --fast-precision $PREC --compile-head --samples 50 --warmup $W
    step profile_r50 60 "$PY" bench/profile_step.py --preset $P --device $DEV --precision $PREC
else
    # the same flow on the CPU with the tiny preset; the GPU-only steps say why they skip
    P=tiny; DEV=cpu; PREC=bf16
    step op_tests 30 "${PYTEST[@]}" test/test_cuda_fallback.py
    step timing_r50_900q 30 "$PY" -m sparsebev_cli.cli timing --preset $P --device $DEV --data rig --compare --fast-precision $PREC --samples 3 --warmup 1
    step pipeline_r50 30 "$PY" bench/pipeline.py --preset $P --device $DEV --precision fp32 --frames 12 --warmup 1 --workers 2
    step sampling_bench 30 "$PY" bench/sampling.py --device cpu --shapes r50_nuimg_704x256 --dtypes fp32 --repeats 1 --warmup 0
    skip parity_cuda 'no CUDA device (the CPU parity test runs in CI: test/test_parity.py)'
    step fast_path_tests 40 "${PYTEST[@]}" test/test_fast_path.py test/test_device_preprocess.py -k 'not compiled'
    skip timing_r50_400q 'dry run: the r50 shapes need a GPU'
    skip timing_r101_1408x512 'dry run: the r101 shapes need a GPU'
    skip timing_r50_900q_compiled 'dry run: compiling costs a minute on a small CPU (test_fast_path.py covers it)'
    step profile_r50 30 "$PY" bench/profile_step.py --preset $P --device $DEV --precision fp32 --warmup 1 --steps 2 --top 8
fi

say "Summary: $PASSED ok, $FAILED failed or timed out, $SKIPPED skipped; $(( SECONDS - START )) s in all."
echo "[gpu_suite] report: $REPORT ($PASSED ok, $FAILED failed, $SKIPPED skipped, $(( SECONDS - START )) s)" >&2
exit 0
