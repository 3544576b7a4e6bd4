#!/usr/bin/env bash
# Side-by-side measurements of this checkout ("new") and an older one ("old"), alternating in one
# session on the same machine (docs/benchmarks.md, "Before and after"). Run on a quiet machine.
# Usage: bash scripts/compare_before_after.sh OLD_CHECKOUT [OUT_DIR]
#   OLD_CHECKOUT: e.g. `git worktree add /tmp/baseline <commit>`; it runs with this venv
#   (from its own folder, so that its sources shadow the editable install).
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD; OLD=$(cd "$1" && pwd); M=${2:-runs/before_after}; mkdir -p "$M"
PY=$ROOT/.venv/bin/python
new() { (cd "$ROOT" && "$PY" -m mbrl_control.apps.cli "$@"); }
old() { (cd "$OLD" && "$PY" -m mbrl_control.cli "$@"); }
lscpu | grep -E "Model name|^CPU\(s\)" > "$M/machine.txt"; git rev-parse HEAD > "$M/new_commit.txt"
git -C "$OLD" rev-parse HEAD > "$M/old_commit.txt"

# cold start: fresh caches; new = `mbrl-control compile` then the demo, old = the demo alone
for side in new old; do
  export XDG_CACHE_HOME=$(mktemp -d)
  if [ $side = new ]; then /usr/bin/time -f "%e" -o "$M/compile_cold_new.txt" bash -c "cd $ROOT && $PY -m mbrl_control.apps.cli compile" > "$M/compile_new.out" 2>&1
    (cd "$ROOT" && $PY scripts/first_command_time.py '^\[demo\] ' -- $PY -m mbrl_control.apps.cli demo --out "$ROOT/$M/demo_cold_$side") > "$M/first_command_cold_$side.txt"
  else (cd "$OLD" && $PY "$ROOT/scripts/first_command_time.py" '^\[demo\] ' -- $PY -m mbrl_control.cli demo --out "$ROOT/$M/demo_cold_$side") > "$M/first_command_cold_$side.txt"; fi
  (cd "$([ $side = new ] && echo "$ROOT" || echo "$OLD")" && $PY "$ROOT/scripts/first_command_time.py" '^\[demo\] ' -- $PY -m mbrl_control.$([ $side = new ] && echo apps.cli || echo cli) demo --out "$ROOT/$M/demo_warm_$side") > "$M/first_command_warm_$side.txt"
  echo "$XDG_CACHE_HOME" > "$M/cache_$side.txt"
done

# step-time rows, each twice per side, alternating
for rep in 1 2; do for side in new old; do
  $side bench --problem bicycle-track --json > "$M/bt_${side}_$rep.json" 2> "$M/bt_${side}_$rep.err"
  $side bench --problem track --samples 2048 --horizon 100 --peer none --json > "$M/track_${side}_$rep.json" 2>&1
  $side bench --problem track --samples 2048 --horizon 100 --residual 32,32 --peer none --json > "$M/track_res_${side}_$rep.json" 2>&1
  $side bench --controller ilqr --problem bicycle-track --json > "$M/ilqr_bt_${side}_$rep.json" 2>&1
  $side bench --controller ilqr --problem track --json > "$M/ilqr_track_${side}_$rep.json" 2>&1
done; done

# closed-loop rows of the README table, same seeds
for side in new old; do
  $side sim --track Austin --plant dynamic --controller mppi --model dynamic --laps 2 --seed 0 --out "$ROOT/$M/austin_mppi_$side" --quiet > /dev/null 2>&1
  $side sim --track Austin --plant dynamic --controller ilqr --model dynamic --laps 2 --seed 0 --out "$ROOT/$M/austin_ilqr_$side" --quiet > /dev/null 2>&1
  $side sim --track Spielberg --plant dynamic --controller pure_pursuit --laps 1 --seed 1 --out "$ROOT/$M/spielberg_pp_$side" --quiet > /dev/null 2>&1
  $side sim --track Monza --plant dynamic --controller mppi --model kinematic --online-sysid --laps 3 --seed 0 --out "$ROOT/$M/monza_sysid_$side" --quiet > /dev/null 2>&1
  $side sim --track Spielberg --plant mujoco --controller mppi --model kinematic --online-sysid --laps 2 --seed 0 --out "$ROOT/$M/spielberg_mujoco_$side" --quiet > /dev/null 2>&1
done

# AMD vs Intel: LLVM's Intel AVX-512 tuning (+prefer-256-bit) emulated on this CPU; threading layers
HOST=$("$PY" -c "from numba.core.codegen import get_host_cpu_features as f; print(f())")
for threads in 1 2; do
  for width in 512 256; do
    FEAT=$HOST,$([ $width = 256 ] && echo + || echo -)prefer-256-bit
    NUMBA_NUM_THREADS=$threads NUMBA_CPU_FEATURES=$FEAT new bench --problem bicycle-track --samples 2000 16384 --peer none --seeds 0 --json > "$M/width${width}_threads${threads}.json" 2>&1
  done
done
for layer in workqueue omp; do
  NUMBA_THREADING_LAYER=$layer new bench --problem bicycle-track --samples 2000 16384 --peer none --seeds 0 --json > "$M/layer_$layer.json" 2>&1
done
echo ALLDONE > "$M/done.txt"
