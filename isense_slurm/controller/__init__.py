"""The lend loop of `isense serve`: observe Slurm, plan with planner/, act (sbatch/scancel);
the daemon wiring of the controller, the gateway and the reclaim room."""
