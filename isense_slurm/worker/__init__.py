"""What runs inside a lent Slurm job: start vLLM, register with the gateway,
heartbeat, and drain on SIGTERM.

Modules: identity (job id, node, GPUs from the environment), vllm_process (command
line and the vLLM process group), registration (the gateway's control protocol),
drain (the SIGTERM sequence), main (the asyncio loop that ties them together).
"""
