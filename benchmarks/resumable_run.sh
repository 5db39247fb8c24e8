# Sourced by the resumable CPU run scripts (glide_baseline_cpu.sh, bsr_stage_cpu.sh,
# learned_variance_decoder_cpu.sh): the work folder, its timings log, a copy of the shipped model
# to train into, and training that resumes across interruptions. Needs WORK and DEVICE set.
PY=${PY:-python}
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH}
MODEL=$WORK/model
mkdir -p "$WORK"
LOG=$WORK/timings.txt
touch "$LOG"  # appended: an interrupted step logs each part it ran

copy_shipped_model() {  # the shipped model, whose components the run keeps or retrains
  [ -f "$MODEL/model.json" ] || cp -r src/unclip/models/shapes "$MODEL"
}

train_once() {  # train_once COMPONENT NOTE ARGS...: `unclip train ARGS` into $MODEL until COMPONENT is done
  local component=$1 note=$2; shift 2
  [ -f "$WORK/$component.done" ] && return 0
  local mode=--overwrite  # the copy's own component is replaced the first time ...
  [ -d "$MODEL/runs/$component" ] && mode=--resume  # ... and continued after an interruption
  local t0; t0=$(date +%s)
  $PY -m unclip train "$@" --out "$MODEL" --device "$DEVICE" "$mode" --no-progress
  echo "$component $(( $(date +%s) - t0 )) s ($note)" | tee -a "$LOG"
  touch "$WORK/$component.done"
}

timed() {  # timed NAME COMMAND...: run and log the time (to the log and stderr: stdout stays the command's)
  local name=$1; shift
  local t0; t0=$(date +%s)
  "$@"
  echo "$name $(( $(date +%s) - t0 )) s" | tee -a "$LOG" >&2
}
