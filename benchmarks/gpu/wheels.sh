#!/usr/bin/env bash
# Fill .gpu-wheels/ with the wheels benchmarks/gpu/run.sh installs on the accelerator machine,
# which has no network (issue 16). Run it here, where pip reaches a package index:
#
#   benchmarks/gpu/wheels.sh                  # for CPython 3.12 on x86_64 manylinux: that machine's python3
#   PYTHON_VERSION=3.11 benchmarks/gpu/wheels.sh
#   benchmarks/gpu/wheels.sh --list           # only print what would be fetched
#
# The names are in benchmarks/gpu/wheels.txt, one a line; each gets the version requirements.lock
# pins (a "name==version" line pins its own). --no-deps: what is missing there must be listed.
# Environment: PYTHON (the python whose pip downloads; default .venv/bin/python, else python3),
# PYTHON_VERSION (3.12), CAIRN_GPU_WHEELS (the folder, .gpu-wheels), CAIRN_GPU_WHEELS_MAX_MIB (55).
set -euo pipefail
cd "$(dirname "$0")/../.."

if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
PYTHON_VERSION=${PYTHON_VERSION:-3.12}
DEST=${CAIRN_GPU_WHEELS:-.gpu-wheels}
MAX_MIB=${CAIRN_GPU_WHEELS_MAX_MIB:-55}

# name==version for every line of wheels.txt, the version from requirements.lock (PEP 503 names).
pins=$("$PYTHON" - benchmarks/gpu/wheels.txt requirements.lock <<'EOF'
import re, sys

def norm(name):
    return re.sub(r"[-_.]+", "-", name).lower()

wanted, lock = sys.argv[1], sys.argv[2]
pinned = {}
for line in open(lock, encoding="utf-8"):
    line = line.split("#", 1)[0].strip()
    if "==" in line:
        name, version = line.split("==", 1)
        pinned[norm(name.split("[", 1)[0])] = version.strip()
missing = []
for line in open(wanted, encoding="utf-8"):
    name = line.split("#", 1)[0].strip()
    if not name:
        continue
    if "==" in name:
        print(name)
    elif norm(name) in pinned:
        print(f"{name}=={pinned[norm(name)]}")
    else:
        missing.append(name)
if missing:
    sys.exit(f"not pinned in {lock}: {', '.join(missing)} (write name==version in {wanted})")
EOF
)

if [ "${1:-}" = "--list" ]; then
    echo "$pins"
    exit 0
fi

rm -rf "$DEST"
mkdir -p "$DEST"
# manylinux tags: pip matches each exactly; these cover the wheels of the packages listed.
# shellcheck disable=SC2086  # one pin a word
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: \
    --python-version "$PYTHON_VERSION" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
    -d "$DEST" $pins

# The bundled embedding model's shape (configuration and tokenizer, ~0.7 MB, no weights) for embed.py's
# --random-weights-from on the GPU machine, where the 88 MB of weights cannot travel.
"$PYTHON" benchmarks/gpu/embed.py --export-shape "$DEST/minilm-shape" >/dev/null

size=$(du -sm "$DEST" | cut -f1)
ls -1 "$DEST"
echo "$(ls -1 "$DEST" | wc -l) wheels, ${size} MiB in $DEST (for CPython $PYTHON_VERSION, x86_64)"
if [ "$size" -gt "$MAX_MIB" ]; then
    echo "more than ${MAX_MIB} MiB: a device call carries 64 MiB with the repository; drop something" >&2
    exit 1
fi
