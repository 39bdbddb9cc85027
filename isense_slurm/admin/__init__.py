"""Admin tools that only commands use: isense doctor and isense slurm-conf."""
