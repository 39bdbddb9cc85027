"""isense-slurm: idle Slurm GPUs to paid LLM inference."""

__version__ = "0.1.0"
