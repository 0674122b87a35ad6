#!/usr/bin/env bash
# Execute every notebook with small parameters, check the deterministic outputs, build the book.
#
#   scripts/run_notebooks.sh [--in-place] [--full] [--report=DIR] [--skip-nbval] [--skip-book]
#
# Papermill runs each notebook in notebooks/ with the 0.5B offline model and a few prompts (with
# --full: with the defaults of each notebook's parameters cell, which are slow on a CPU) and
# writes the executed copy to _build/executed/ (with --in-place: over the notebook in notebooks/,
# where the injected parameters end up as a markdown note, so the notebook keeps its defaults).
# nbval then runs the executed notebooks that have "# NBVAL_CHECK_OUTPUT" cells a second time and
# compares those cells, after the substitutions in nbval_sanitize.cfg. Last, scripts/build_book.sh
# builds the book, which shows the outputs stored in notebooks/.
#
# NOTEBOOK_MODEL overrides the model, for example NOTEBOOK_MODEL=qwen2.5-coder-1.5b-instruct.
# --report=DIR makes notebook 4 read the report of an earlier `swe-toolkit run` in DIR (for
# example results/main-run) instead of running a small job, and skips its MGSM/MMMLU section.
set -euo pipefail
cd "$(dirname "$0")/.."

in_place=0
full=0
run_nbval=1
run_book=1
report=""
for argument in "$@"; do
    case "$argument" in
        --in-place) in_place=1 ;;
        --full) full=1 ;;
        --report=*) report="${argument#--report=}" ;;
        --skip-nbval) run_nbval=0 ;;
        --skip-book) run_book=0 ;;
        *) echo "unknown option $argument; use --in-place, --full, --report=DIR, --skip-nbval or --skip-book" >&2; exit 2 ;;
    esac
done
if [[ -n $report && ! -f $report/report.json ]]; then
    echo "--report=$report: no report.json in that folder; pass the output folder of swe-toolkit run" >&2
    exit 2
fi

model="${NOTEBOOK_MODEL:-qwen2.5-coder-0.5b-instruct}"
if [[ $full == 1 ]]; then
    model="${NOTEBOOK_MODEL:-qwen2.5-coder-1.5b-instruct}"
fi
out_dir="_build/executed"
if [[ $in_place == 1 ]]; then
    out_dir="notebooks"
fi
mkdir -p "$out_dir"
# Papermill and nbval both run the kernel in the folder of the executed notebook, so paths passed
# as parameters are relative to that folder.
fixtures="$(python -c 'import os, sys; print(os.path.relpath(sys.argv[1], sys.argv[2]))' tests/fixtures "$out_dir")"

execute() {
    local name="$1" parameters="$2"
    local started=$SECONDS
    if [[ $full == 1 ]]; then
        parameters="{}"
    fi
    papermill "notebooks/$name.ipynb" "$out_dir/$name.ipynb" --cwd "$out_dir" --no-progress-bar \
        -p MODEL "$model" -y "$parameters"
    python scripts/clean_notebook_outputs.py "$out_dir/$name.ipynb"
    echo "$name: $((SECONDS - started)) s"
}

started=$SECONDS
execute 01_safety_neurons "
NUM_LOCALIZE: 8
NUM_GAP: 8
JUDGE: logit
NUM_BOOTSTRAP: 5
NEURONS: 1024
"
execute 02_closed_form "
NUM_PROMPTS: 8
NUM_GENERAL: 8
NEURONS: 128
"
execute 03_apply_edit "
NUM_FIT: 8
NUM_GENERAL: 8
NUM_TEST: 4
NUM_EXAMPLES: 2
MAX_NEW_TOKENS: 24
NEURONS: 512
"
if [[ -n $report ]]; then
    report_relative="$(python -c 'import os, sys; print(os.path.relpath(sys.argv[1], sys.argv[2]))' "$report" "$out_dir")"
    execute 04_eight_languages "
REPORT_DIR: $report_relative
"
else
    execute 04_eight_languages "
RUN_SETTINGS: {num_fit: 6, num_test: 6, num_general: 4, max_new_tokens: 16, neurons: 512, batch_size: 8}
MGSM_PATH: $fixtures/mgsm
MMMLU_PATH: $fixtures/mmmlu
TASK_LIMIT: 3
MGSM_MAX_NEW_TOKENS: 24
"
fi
execute 05_ablations "
LANGUAGES: [en, zh, th, bn]
NUM_FIT: 6
NUM_DEV: 4
NUM_GENERAL: 3
NUM_KL: 3
KL_MAX_TOKENS: 64
NEURONS: 256
NEURON_GRID: [64]
RANK_GRID: [2]
ALPHA_GRID: [10.0]
LAYER_GRID: [7]
TRANSFER_FIT_LANGUAGES: [zh]
"
echo "papermill: all notebooks in $((SECONDS - started)) s"

if [[ $run_nbval == 1 ]]; then
    started=$SECONDS
    checked=()
    for notebook in "$out_dir"/0*.ipynb; do
        if grep -q "NBVAL_CHECK_OUTPUT" "$notebook"; then
            checked+=("$notebook")
        fi
    done
    python -m pytest -q -p no:cacheprovider --nbval-lax --nbval-sanitize-with nbval_sanitize.cfg "${checked[@]}"
    echo "nbval: ${#checked[@]} notebooks in $((SECONDS - started)) s"
fi

if [[ $in_place == 1 ]]; then
    # The committed notebooks must run with their own defaults when a reader opens them: the
    # injected parameters become a markdown note (after nbval, which re-runs them as they ran).
    python scripts/clean_notebook_outputs.py --note-parameters "$out_dir"/0*.ipynb
fi

if [[ $run_book == 1 ]]; then
    started=$SECONDS
    scripts/build_book.sh
    echo "book: $((SECONDS - started)) s"
fi
