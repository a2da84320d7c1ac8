"""The research loop: run an experiment, judge it against the recorded best, keep or revert it, record it.

    ledger.py    results.tsv + the JSON-lines ledger and the run cache (append-only, atomic)
    gitops.py    the git ratchet: the branch, harness commits, reset to the recorded best
    execute.py   one run of one script with one seed: the subprocess, the live line, crash and violation checks
    decide.py    keep, discard or confirm, against the best and the measured seed spread
    agents.py    the agent command: presets, the prompt, a timeout
    loop.py      `autoresearch run` (one experiment) and `autoresearch loop` (all night)
    driver.py    `loop --workers N` / `--ray`: N experiments in flight, one best, optimistic concurrency
    workers.py   where those run: a local process per GPU, or a Ray task; the dataset check, no orphaned runs
    report.py    `autoresearch results`: counts, best vs baseline, kept timeline, plot
"""
