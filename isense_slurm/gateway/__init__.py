"""The OpenAI-compatible front door: API keys, body checks, the worker registry, forwarding
and streaming to workers' vLLM, and the ledger rows of every request (http/ serves it)."""
