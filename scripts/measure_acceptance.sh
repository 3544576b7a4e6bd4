#!/usr/bin/env bash
# The acceptance measurements of docs/benchmarks.md, one after another (run on a quiet machine).
# Usage: bash scripts/measure_acceptance.sh [OUT_DIR]   (default runs/acceptance)
set -x
cd "$(dirname "$0")/.."
M=${1:-runs/acceptance}; mkdir -p $M
lscpu | grep -E "Model name|^CPU\(s\)|Flags" | cut -c1-120 > $M/machine.txt
.venv/bin/mbrl-control bench --problem bicycle-track --json > $M/bench_bt.json 2> $M/bench_bt.err
.venv/bin/mbrl-control bench --problem track --samples 2048 --horizon 100 --peer none --json > $M/bench_track.json 2> $M/bench_track.err
.venv/bin/mbrl-control bench --problem track --samples 2048 --horizon 100 --residual 32,32 --peer none --json > $M/bench_track_res.json 2> $M/bench_track_res.err
.venv/bin/mbrl-control bench --controller ilqr --problem bicycle-track --json > $M/bench_ilqr_bt.json 2> $M/bench_ilqr_bt.err
.venv/bin/mbrl-control bench --controller ilqr --problem track --json > $M/bench_ilqr_track.json 2> $M/bench_ilqr_track.err
.venv/bin/python -m mbrl_control.apps.mujoco_bench > $M/mujoco_bench.txt 2>&1
.venv/bin/mbrl-control sim --track Austin --plant dynamic --controller mppi --model dynamic --laps 2 --seed 0 --out $M/austin_mppi --quiet > /dev/null 2> $M/austin_mppi.err
.venv/bin/mbrl-control sim --track Austin --plant dynamic --controller ilqr --model dynamic --laps 2 --seed 0 --out $M/austin_ilqr --quiet > /dev/null 2> $M/austin_ilqr.err
.venv/bin/mbrl-control sim --track Spielberg --plant dynamic --controller pure_pursuit --laps 1 --seed 1 --out $M/spielberg_pp --quiet > /dev/null 2> $M/spielberg_pp.err
.venv/bin/mbrl-control sim --track Monza --plant dynamic --controller mppi --model kinematic --online-sysid --laps 3 --seed 0 --out $M/monza_sysid --quiet > /dev/null 2> $M/monza_sysid.err
.venv/bin/mbrl-control sim --track Spielberg --plant mujoco --controller mppi --model kinematic --online-sysid --laps 2 --seed 0 --out $M/spielberg_mujoco --quiet > /dev/null 2> $M/spielberg_mujoco.err
.venv/bin/mbrl-control demo --out $M/demo > $M/demo.out 2> $M/demo.err
.venv/bin/mbrl-control demo --plant mujoco --out $M/demo_mujoco > $M/demo_mujoco.out 2> $M/demo_mujoco.err
echo ALLDONE
