#!/usr/bin/env bash
# The speed issue's GPU figures in one prepared run, for a machine with a CUDA GPU, torch and numpy
# (neither Ray nor MLflow is needed, nor an installed seqrep: the sources are put on PYTHONPATH):
#
#   benchmarks/fused_agreement.py                              the fused recurrence against the eager one
#   benchmarks/fd_rnn_step.py                                  FD-RNN / cuDNN nn.RNN, H=600 B=32 T=100 (goal <= 2),
#                                                              and again with SEQREP_GRAPHS=0 (no CUDA graphs)
#   benchmarks/cohort_rnn.py --device cuda --k 8 --hidden 600   8 FD-RNN trials, cohort / one by one (goal >= 4),
#                                                              one epoch (3 repeats) and five epochs (once)
#   benchmarks/cohort_profile.py --device cuda --k 8 --hidden 600
#                                                              where the cohort's and the solo runs' time goes
#   benchmarks/cohort_storn.py --device cuda --k 16            16 STORN trials (Table 13's shape), cohort / one by
#                                                              one: seqrep trains STORN cohorts only on GPUs
#   SEQREP_GRAPH_FORK=1: fused_agreement.py, fd_rnn_step.py,    the experiment of `step_graphs.Arena.products`
#   cohort_rnn.py (one epoch, 3 repeats)                       (each step's two products at once); its agreement
#                                                              line "graphs" must stay 0.0
#
# JSB Chorales comes from $SEQREP_DATA, else from `.device-data/` at the project root (git-ignored),
# which then holds polyphonic/JSB_Chorales.pickle. Each benchmark's output is also written to
# OUT_DIR (default $OUT, else /tmp); each benchmark is cut off (90 to 150 s), so that a hang cannot
# take the others' figures. About 1 1/2 minutes on one H200 for the first five (80 s at 7d8a310);
# the profile, the STORN cohort and the SEQREP_GRAPH_FORK=1 runs are new (not yet run on a GPU).
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="platform:.${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export SEQREP_DATA="${SEQREP_DATA:-.device-data}"
out="${1:-${OUT:-/tmp}}"
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "nvidia-smi: not found"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
status=0
timeout 90 python3 benchmarks/fused_agreement.py 2>&1 | tee "$out/fused_agreement.txt" || status=1
timeout 100 python3 benchmarks/fd_rnn_step.py 2>&1 | tee "$out/fd_rnn_step.txt" || status=1
SEQREP_GRAPHS=0 timeout 100 python3 benchmarks/fd_rnn_step.py 2>&1 | tee "$out/fd_rnn_step_no_graphs.txt" || status=1
timeout 150 python3 benchmarks/cohort_rnn.py --device cuda --k 8 --hidden 600 --repeats 3 2>&1 | tee "$out/cohort_rnn.txt" || status=1
timeout 120 python3 benchmarks/cohort_rnn.py --device cuda --k 8 --hidden 600 --epochs 5 --repeats 1 2>&1 | tee "$out/cohort_rnn_5.txt" || status=1
timeout 150 python3 benchmarks/cohort_profile.py --device cuda --k 8 --hidden 600 2>&1 | tee "$out/cohort_profile.txt" || status=1
timeout 200 python3 benchmarks/cohort_storn.py --device cuda --k 16 --repeats 2 2>&1 | tee "$out/cohort_storn.txt" || status=1
export SEQREP_GRAPH_FORK=1
timeout 90 python3 benchmarks/fused_agreement.py 2>&1 | tee "$out/fused_agreement_fork.txt" || status=1
timeout 100 python3 benchmarks/fd_rnn_step.py 2>&1 | tee "$out/fd_rnn_step_fork.txt" || status=1
timeout 150 python3 benchmarks/cohort_rnn.py --device cuda --k 8 --hidden 600 --repeats 3 2>&1 | tee "$out/cohort_rnn_fork.txt" || status=1
exit $status
