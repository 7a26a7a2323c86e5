#!/usr/bin/env bash
# Side-by-side timings for docs/results/release/ (see README.md there).
set -u
L=/tmp/relbench
export MINBERT_DATA_DIR=/work/shared/data
[ -x /tmp/studpy2/bin/python ] || { /root/.pyenv/versions/3.11.7/bin/python3 -m venv --without-pip /tmp/studpy2 && echo /work/main/.venv/lib/python3.11/site-packages > /tmp/studpy2/lib/python3.11/site-packages/main.pth; }
{ date -u; lscpu | grep -E "Model name|^CPU\(s\)"; nproc; uptime; } > $L/machine.txt
rm -rf /tmp/solved-runs /tmp/main-runs
echo "== release quick start $(date -u +%T) load: $(cut -d' ' -f1-3 /proc/loadavg)" >> $L/times.txt
s=$(date +%s.%N)
(cd /tmp/solved && PYTHONPATH=/tmp/solved nice /tmp/studpy2/bin/python training/run_multitask.py --preset quick --device cpu --out-dir /tmp/solved-runs/quick) > $L/release-quick.log 2>&1
echo "release quick rc=$? wall_s=$(echo "$(date +%s.%N) - $s" | bc) end load: $(cut -d' ' -f1-3 /proc/loadavg)" >> $L/times.txt
echo "== solution quick start $(date -u +%T) load: $(cut -d' ' -f1-3 /proc/loadavg)" >> $L/times.txt
s=$(date +%s.%N)
(cd /work/main && nice /work/main/.venv/bin/python training/run_multitask.py --preset quick --device cpu --out-dir /tmp/main-runs/quick --predictions-dir /tmp/main-runs/predictions) > $L/solution-quick.log 2>&1
echo "solution quick rc=$? wall_s=$(echo "$(date +%s.%N) - $s" | bc) end load: $(cut -d' ' -f1-3 /proc/loadavg)" >> $L/times.txt
for t in handout-rel solved; do
  s=$(date +%s.%N)
  (cd /tmp/$t && PYTHONPATH=/tmp/$t nice /tmp/studpy2/bin/python -m course.grade) > $L/grade-$t.log 2>&1
  echo "grade $t rc=$? wall_s=$(echo "$(date +%s.%N) - $s" | bc) end load: $(cut -d' ' -f1-3 /proc/loadavg)" >> $L/times.txt
done
echo ALLDONE >> $L/times.txt
