"""The node prolog and epilog of isense (run by slurmd as root for every job).

Modules: jobenv (the job's facts from Slurm's environment), markers (the worker's
SIGTERM marker file), spool (events kept while the daemon is unreachable), send (one
small HTTP POST with a hard deadline), prolog / epilog (what each hook decides), run
(the entry point: never raises, logs one line, exits 0).

Start-up is on the critical path of every job, so these import only the standard
library, isense_slurm.config, isense_slurm.secrets and isense_slurm.gpu.
"""
