cd /work/main
run() { name=$1; shift; /usr/bin/time -f "$name maxrss_kb=%M wall=%e" env "$@" .venv/bin/python training/run_multitask.py --tasks sst --epochs 1 --limit-train 3000 --limit-eval 16 --threads 2 --out-dir /tmp/perf/m-$name --overwrite --predictions-dir /tmp/perf/pred --log-every 1000 2>&1 | grep -a "maxrss\|error" ; }
run onednn64 ONEDNN_PRIMITIVE_CACHE_CAPACITY=64
run onednn16 ONEDNN_PRIMITIVE_CACHE_CAPACITY=16
run mmap1m MALLOC_MMAP_THRESHOLD_=1048576 MALLOC_TRIM_THRESHOLD_=131072
run mmap512k MALLOC_MMAP_THRESHOLD_=524288 MALLOC_TRIM_THRESHOLD_=131072
run base X=1
