#!/bin/bash
# The driver that ran the PlaNet RSSM state benchmark on a lent GPU machine (session 11,
# one H100; see README "PlaNet's RSSM"). That machine has torch but not MuJoCo or
# dm-control, and no network, so they travel with the call, in .gpu/site.tar.xz (10 MB;
# built by `python tools/device_site.py` from the mujoco==3.17.0 and dm-tree==0.1.10
# wheels for CPython 3.12 and the pure-Python dm_control, dm_env, gymnasium, glfw,
# farama_notifications, all kept in the ignored .whl/). Session 11 carried the wheels
# themselves (.whl/, 27 MB) and .gpu/site.tar.gz; that path still works when site.tar.xz is
# absent. Call with carry [".gpu"] (or [".gpu", ".whl"] for the old path).
# Calls (each at most 10 minutes; the runs go on between calls in their own sessions):
#   bash tools/device_planet_runs.sh start 530; ... watch 520; ... finish 495
# The runs are task:mode:recipe words, from .gpu/runs if it exists (session 11 ran the six
# PlaNet-recipe ones), else the four DreamerV3-recipe actor runs below. `start` first unpacks
# their bundles in carried/, if any, so a run carried from an earlier session resumes.
# A file .gpu/kill listing task:mode[:recipe] lines stops those runs at the next call. Each
# call packs runs with carry_run.py into $OUT (see the return step at the end: .gpu/return,
# 60 MiB; 15 MB parts, the per-file return limit); unpack them here with
# `cat parts > run.tar.gz; python tools/carry_run.py unpack run.tar.gz`.
# Dreamer-recipe runs are packed with --drop-optimizer (about 20 MB instead of 50: the run
# resumes with fresh Adam moments), so up to three come back
# per call, and one can travel back in a later session to resume: before that call, pack
# it here (`carry_run.py pack --drop-optimizer runs/<run>`, into carried/, untracked) and
# name it in .gpu/runs. The working tree travels too (64 MiB in all, with .gpu): the code
# is about 33 MB (checkpoints included), site.tar.xz 10 MB, which leaves about 24 MB: keep
# carried/ to one such bundle and move other large untracked files out first. A run needs
# more than one session's 30 device minutes.
phase=$1; until_s=$2
t0=$(date +%s)
export PYTHONUNBUFFERED=1 MUJOCO_GL=disable OMP_NUM_THREADS=1
if [ ! -d /tmp/site/dm_control ]; then
  if [ -f .gpu/site.tar.xz ]; then
    python3 -c "import tarfile; tarfile.open('.gpu/site.tar.xz').extractall('/tmp/site')" || exit 1
  else
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    tar xzf .gpu/site.tar.gz -C /tmp/site || exit 1
  fi
fi
export PYTHONPATH=/tmp/site:$PWD
RUNS=$(cat .gpu/runs 2>/dev/null || echo "cartpole-swingup:actor:dreamer cartpole-swingup:planner+actor:dreamer reacher-easy:actor:dreamer reacher-easy:planner+actor:dreamer")
parse() {  # task:mode[:recipe] -> sets task, mode, recipe (planet when left out)
  task=${1%%:*}; local rest=${1#*:}; mode=${rest%%:*}
  if [[ $rest == *:* ]]; then recipe=${rest#*:}; else recipe=planet; fi
}
folder() {  # task:mode[:recipe] -> the run folder (benchmarks/planet_learning.py run_dir)
  parse "$1"
  [ "$recipe" = planet ] && echo "runs/rssm-$task-state-$mode-s0" || echo "runs/rssm-$task-state-$mode-$recipe-s0"
}
progress() {
  for r in runs/rssm-*-state-*-s0; do
    [ -d "$r" ] || continue
    echo "== $r: train $(tail -1 $r/train.csv 2>/dev/null | cut -c1-80)"
    [ -f $r/eval.csv ] && tail -n +2 $r/eval.csv | cut -d, -f1-3 | tr '\n' ' '; echo
  done
}
if [ "$phase" = start ]; then
  nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv
  python3 -c "import torch, mujoco, dm_control; print(torch.__version__, torch.cuda.is_available(), mujoco.__version__)"
  rm -rf /tmp/gpu-smoke
  timeout 120 python3 benchmarks/planet_learning.py run --task cartpole-swingup --mode planner+actor --model tiny \
    --steps 400 --max-episode-steps 25 --chunk-length 10 --batch-size 4 --collect-interval 2 --seed-episodes 1 \
    --eval-every 200 --eval-episodes 2 --plan-samples 20 --plan-iterations 2 --runs-dir /tmp/gpu-smoke --device cuda \
    --no-progress 2>&1 | tail -4 || exit 1
  [ -f /tmp/gpu-smoke/rssm-cartpole-swingup-state-planner+actor-s0/checkpoint.pt ] || { echo "smoke failed"; exit 1; }
  mkdir -p runs
  for r in $RUNS; do  # resume the runs carried from an earlier session (and only those)
    b="carried/$(basename "$(folder "$r")").tar.gz"; [ -f "$b" ] && python3 tools/carry_run.py unpack "$b" 2>&1 | tail -1
  done
  for r in $RUNS; do
    parse "$r"
    setsid nohup python3 benchmarks/planet_learning.py run --task $task --mode $mode --recipe $recipe --device cuda \
      --threads 1 --no-progress > runs/gpu-$task-$mode-$recipe.log 2>&1 < /dev/null &
  done
  sleep 60; tail -3 runs/gpu-*.log; nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv
fi
if [ -f .gpu/kill ]; then
  for n in $(cat .gpu/kill); do
    parse "$n"; pkill -9 -f -- "--task $task --mode ${mode//+/[+]} --recipe $recipe "
    dir=$(folder "$n"); rm -rf "$dir" "carried/$(basename "$dir").tar.gz"
  done
fi
while [ $(( $(date +%s) - t0 )) -lt "$until_s" ]; do sleep 20; done
progress
grep -l -i "error\|traceback" runs/gpu-*.log && tail -5 runs/gpu-*.log
nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader
if [ "$phase" = finish ]; then pkill -9 -f planet_learning.py; sleep 2; fi
# Bring back the runs named in .gpu/return (task:mode[:recipe] words), else those of $RUNS,
# in order, while they fit: a call returns at most 64 MiB (60 used here); a dreamer-recipe
# run packs to about 20 MB without its optimisers, a PlaNet-recipe run to about 11 MB with
# them. Only bundles packed by this call go out (carried/ may also hold bundles brought in).
mkdir -p carried
left=$((60 * 1024 * 1024))
for r in $(cat .gpu/return 2>/dev/null || echo $RUNS); do
  dir=$(folder "$r"); [ -f "$dir/checkpoint.pt" ] || continue
  f="carried/$(basename "$dir").tar.gz"; rm -f "$f"
  parse "$r"; slim=$([ "$recipe" = dreamer ] && echo --drop-optimizer)
  python3 tools/carry_run.py pack $slim "$dir" > /tmp/pack.log 2>&1 || { tail -1 /tmp/pack.log; continue; }
  size=$(stat -c %s "$f")
  if [ "$size" -gt "$left" ]; then echo "not returned this call (no room): $dir ($size bytes)"; continue; fi
  left=$((left - size))
  split -b 15M -d "$f" "$OUT/$(basename "$f" | sed 's/+/_plus_/').part"
done
for f in runs/gpu-*.log; do echo "##### $f"; tail -40 "$f"; done > "$OUT/logs.txt"
ls -la "$OUT"
