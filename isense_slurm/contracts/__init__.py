"""What the processes agree on, defined once: states, end reasons and request statuses
(states), the hook events and their builders (events), the worker-control payloads
(control) and what a worker job is and how it is named (workers).

Pure: standard library only, no I/O; the hooks, the worker, the gateway, the
controller, the meter and the planner all import it.
"""
