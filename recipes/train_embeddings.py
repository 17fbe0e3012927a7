"""Train a sentence-embedding model from a recipe YAML (the code lives in hf_contrastive.scripts.train_embeddings).

Run from the repository root. One process (CPU or one GPU):

    python recipes/train_embeddings.py recipes/configs/quickstart.yaml
    hf-contrastive train recipes/configs/quickstart.yaml                  # the same, through the CLI

Several GPUs (DDP; in-batch negatives are gathered from every rank):

    accelerate launch --config_file hf_contrastive/accelerate_configs/multi_gpu.yaml --num_processes 8 \\
        recipes/train_embeddings.py recipes/configs/simcse-unsup.yaml
    hf-contrastive train recipes/configs/simcse-unsup.yaml --accelerate_config multi_gpu --num_processes 8

Two processes on the CPU (gloo), e.g. to check a multi-GPU recipe on a laptop:

    accelerate launch --config_file hf_contrastive/accelerate_configs/cpu_ddp.yaml \\
        recipes/train_embeddings.py recipes/configs/quickstart.yaml
    hf-contrastive train recipes/configs/quickstart.yaml --accelerate_config cpu_ddp

Flags after the YAML override any of its fields, e.g. `--learning_rate 1e-4 --max_steps 500 --output_dir runs/x`;
`hf-contrastive train ... --dry_run` prints the exact command without running it.
"""

from hf_contrastive.scripts.train_embeddings import main

if __name__ == "__main__":
    main()
