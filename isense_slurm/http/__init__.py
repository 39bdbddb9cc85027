"""The one HTTP server of `isense gateway` and `isense serve`, and what its routes share.

- app.py: the aiohttp application, every route mounted in one place;
- server.py: serve(), listening until SIGTERM/SIGINT, then a clean stop;
- metrics_route.py: GET /metrics over report/metrics.py's collectors;
- address.py: where the server listens (--listen or [gateway] listen);
- errors.py: OpenAI-style error bodies, the one shape of every refusal;
- access.py: who may call: bearer tokens and the local-only rule;
- body.py: reading a request's JSON body;
- protocol.py: aiohttp's own refusals in JSON.

errors, access, body and protocol import no other room: gateway/, the hook intake and
report/ use them. app and server import the rooms whose routes they mount.
"""
