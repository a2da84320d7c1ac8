"""The baseline's own tests: the committed twins' insides (their optimizer against float64 references, their FLOPs
count, their window pattern, their weight names), marked `baseline`. A research branch that changes those insides
rewrites these; the harness tests (everything outside this folder) hold for any twin that keeps the API
(docs/twins.md) and must pass unchanged: `pytest -m "not baseline"` runs only them."""
