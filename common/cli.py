"""The `autoresearch` command line.

    autoresearch demo                       # the research loop on the offline demo data, with a scripted agent
    autoresearch prepare [--dataset ...]    # data + tokenizer + token shards
    autoresearch train --backend mlx        # one experiment with the active profile, its whole output shown
    autoresearch run --tag nov25            # judge the script's change: keep it or revert it, and record it
    autoresearch loop --tag nov25 --agent claude   # the agent proposes, the harness judges, all night
    autoresearch results                    # what the branch found
    autoresearch check-hardware             # JSON on stdout, summary on stderr
    autoresearch doctor                     # what would make this machine faster

Subcommands import their heavy modules lazily, so `autoresearch --help` is instant. A mistake a user can make ends in
one or two lines saying what to run instead, exit status 1 (2 for a bad option), and no Python traceback.
"""

from __future__ import annotations

import errno
import json
import os
import re
import sys
from pathlib import Path

import click


class UserError(click.ClickException):
    """An error the user can fix: printed as one line, exit status 1, no traceback."""


RESUMES = "\ninterrupted: everything finished so far is kept; rerun the same command to resume"


def _user_errors(fn=None, *, interrupted: str | None = None):
    """Turn the errors a user can fix into UserError. Ctrl-C prints `interrupted` and exits 130 where given, else it
    goes on (to the command's own handler, or click's `Aborted!`)."""
    if fn is None:
        return lambda f: _user_errors(f, interrupted=interrupted)
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from common.shards import ShardError
        from common.sources import SourceError
        from common.tokenizer import TooLittleText

        errors: tuple = (SourceError, ShardError, TooLittleText, ValueError)
        try:
            from common.download import DownloadError

            errors += (DownloadError,)
        except ImportError:
            pass
        try:
            return fn(*args, **kwargs)
        except KeyboardInterrupt:
            if interrupted is None:
                raise
            click.echo(interrupted, err=True)
            sys.exit(130)
        except OSError as e:
            if e.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
                raise UserError(
                    f"disk full while writing {e.filename or 'data'}: free some space and rerun to resume"
                ) from e
            if isinstance(e, (FileNotFoundError, PermissionError, FileExistsError, IsADirectoryError,
                              NotADirectoryError)):  # fmt: skip
                raise UserError(_os_message(e)) from e
            raise
        except errors as e:
            raise UserError(str(e)) from e

    return wrapper


def _os_message(e: OSError) -> str:
    """Our own FileNotFoundError carries its message; one from the OS gets the path and what to do."""
    if not e.filename or not e.strerror:
        return str(e)
    fix = {
        PermissionError: "check its permissions, or choose another path",
        FileExistsError: "a file is in the way: move it, or choose another path",
        NotADirectoryError: "a file is in the way of a directory: move it, or choose another path",
        IsADirectoryError: "that is a directory: give a file path",
    }.get(type(e), "check the path")
    return f"{e.strerror}: {e.filename}: {fix}"


def _print_version(ctx: click.Context, _param, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    from importlib import metadata

    try:
        version = metadata.version("autoresearch")
    except metadata.PackageNotFoundError:
        version = "(not installed: pip install -e .)"
    click.echo(f"autoresearch {version}")
    ctx.exit()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_print_version,
              help="Print the version and exit.")  # fmt: skip
def main() -> None:
    """autoresearch: fixed-time LLM-pretraining experiments, MLX first, with a PyTorch twin at parity."""


@main.command()
@click.option(
    "--dataset",
    default=None,
    help="climbmix (default when online) | tinystories | demo (offline) | PATH to your own corpus",
)
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="where to write (default $AUTORESEARCH_HOME/<dataset>)",
)
@click.option("--vocab-size", type=click.IntRange(261, 65536), default=8192, show_default=True)
@click.option(
    "--num-shards",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="climbmix training shards to download (the val shard is pinned)",
)
@click.option(
    "--workers", type=click.IntRange(min=1), default=8, show_default=True, help="parallel downloads"
)
@_user_errors(interrupted=RESUMES)
def prepare(dataset, data_dir, vocab_size, num_shards, workers) -> None:
    """Download or generate text, train the tokenizer, tokenize everything once."""
    from common.download import hf_base, reachable
    from common.prepare import prepare as run_prepare

    if dataset is None:
        online = reachable()
        dataset = "climbmix" if online else "demo"
        why = "online" if online else f"offline: {hf_base()} cannot be reached"
        click.echo(f"prepare: --dataset not given; using {dataset} ({why})", err=True)
    out = run_prepare(dataset, data_dir, vocab_size=vocab_size, num_shards=num_shards, workers=workers)
    click.echo(str(out))


@main.command("check-hardware")
def check_hardware() -> None:
    """Report what can run here (JSON on stdout, summary on stderr); exit 1 when nothing can."""
    from common.hardware import probe, summarize

    info = probe()
    click.echo(json.dumps(info, indent=2))
    click.echo(summarize(info), err=True)
    sys.exit(0 if info["ready"] else 1)


@main.command()
def doctor() -> None:
    """What would make this machine faster (missing OpenBLAS, a CPU-only torch beside a GPU, low disk, ...)."""
    from common.hardware import probe

    info = probe()
    rec = info["recommended"]
    if info["ready"]:
        click.echo(f"recommended: --backend {rec['backend']} --profile {rec['profile']}  ({rec['reason']})")
    else:
        click.echo(f"NOT READY: {rec['reason']}")
    for item in info["advice"]:
        click.echo(f"- {item['what']}\n  fix: {item['fix']}")
    if not info["advice"]:
        click.echo("nothing found to fix")
    sys.exit(0 if info["ready"] else 1)


def _check_profile(ctx, param, value):
    if value is None:
        return None
    from common.profiles import PROFILES, get_profile

    try:
        return get_profile(value).name
    except ValueError as e:
        import difflib

        guess = difflib.get_close_matches(value.split("@")[0], PROFILES, n=1)
        hint = (
            f"; did you mean `--profile {guess[0]}`?" if guess and value.split("@")[0] not in PROFILES else ""
        )
        raise click.BadParameter(str(e).replace(" (--profile or $AUTORESEARCH_PROFILE)", "") + hint) from e


_backend_opt = click.option(
    "--backend", default="auto", show_default=True, type=click.Choice(["auto", "mlx", "cuda", "mps", "cpu"])
)
_profile_opt = click.option(
    "--profile",
    default=None,
    callback=_check_profile,
    help="a tier (h100, gpu40, gpu24, gpu8, gpu6, mac32, mac16, mac8, cpu, ci) or one with an override "
    "(h100@120s, ci@50steps); "
    "default: $AUTORESEARCH_PROFILE or check-hardware's pick",
)


@main.command()
@_backend_opt
@_profile_opt
@click.option("--steps", type=click.IntRange(min=1), default=None, help="fixed-step mode: exactly N steps")
@click.option("--seed", type=click.IntRange(min=0), default=None, help="default 42")
@click.option(
    "--timeout", type=click.FloatRange(min=1), default=None, help="seconds (default: the profile's)"
)
@click.option(
    "--log", "log_path", type=click.Path(path_type=Path), default=Path("run.log"), show_default=True
)
@_user_errors
def train(backend, profile, steps, seed, timeout, log_path) -> None:
    """Run one experiment and show its whole output (nothing is recorded: `autoresearch run` records)."""
    try:
        _train(backend, profile, log_path, steps=steps, seed=seed, timeout=timeout)
    except KeyboardInterrupt:
        click.echo(
            f"\ninterrupted: the run was stopped and nothing was recorded (its output so far: {log_path}); "
            "`autoresearch train` does not resume: rerunning starts the experiment over",
            err=True,
        )
        sys.exit(130)


def _train(backend: str, profile: str | None, log_path: Path, data_dir: Path | None = None, *, steps=None,
           seed=None, timeout=None) -> dict:  # fmt: skip
    from common.paths import check_prepared
    from common.profiles import get_profile, run_timeout
    from common.runner import resolve_backend, run_experiment

    prof = get_profile(profile)
    if steps:
        prof = get_profile(f"{prof.name}@{steps}steps")
    backend = _usable_backend(backend, resolve_backend)
    check_prepared(data_dir)
    timeout = timeout or run_timeout(prof)
    click.echo(
        f"train: backend {backend}, profile {prof.name} ({prof.description}); log {log_path}", err=True
    )
    result = run_experiment(
        backend, prof.name, log_path, data_dir, timeout=timeout, seed=seed, on_line=_HideTracebacks()
    )
    if result["timed_out"]:
        raise UserError(
            f"the run took longer than {timeout:.0f}s and was stopped (--timeout): see {log_path}"
        )
    if result["exit_code"] != 0 or "val_bpb" not in result:
        raise UserError(
            explain_failure(Path(log_path).read_text(errors="replace"), result["exit_code"], log_path)
        )
    return result


def _usable_backend(backend: str, resolve_backend) -> str:
    """The backend to run: check-hardware's pick for `auto`; an explicit one only if it can run here."""
    from common.hardware import backend_problem, probe

    if backend == "auto":
        chosen = resolve_backend("auto")
        if chosen is None:
            raise UserError(f"nothing can train here: {probe()['recommended']['reason']}")
        return chosen
    problem = backend_problem(backend)
    if problem is None:
        return backend
    rec = probe()["recommended"]
    pick = (
        f"check-hardware recommends `--backend {rec['backend']} --profile {rec['profile']}` (or leave --backend out)"
        if rec["backend"]
        else f"nothing can train here: {rec['reason']}"
    )
    raise UserError(f"--backend {backend} cannot run here: {problem}.\n{pick}")


class _HideTracebacks:
    """Echo a run's output as it comes, except Python tracebacks: they stay in the log, and the harness sums
    them up in a line or two after the run (explain_failure)."""

    CHAINED = ("During handling of the above exception", "The above exception was the direct cause")

    def __init__(self) -> None:
        self.inside = False
        self.held: list[str] | None = (
            None  # after a traceback: blank and "During handling" lines, until we know
        )

    def __call__(self, line: str) -> None:
        if line.startswith("Traceback (most recent call last):"):
            self.inside, self.held = True, None
            return
        if self.inside:
            if not line.strip() or line[0] in " \t":
                return
            self.inside, self.held = False, []  # the exception's own line ends the traceback
            return
        if self.held is not None:
            if not line.strip() or line.startswith(self.CHAINED):
                self.held.append(line)  # a chained traceback may follow
                return
            line, self.held = "".join(self.held) + line, None
        sys.stdout.write(line)
        sys.stdout.flush()


# Errors the harness raises with a message that says what to do: from common/ and backends/, they are not bugs.
_USER_ERRORS = {
    "ShardError",
    "SourceError",
    "TooLittleText",
    "FileNotFoundError",
    "ValueError",
    "RuntimeError",
}


def explain_failure(log: str, exit_code: int, log_path) -> str:
    """One or two lines on why a training run failed, from its log: a user's mistake with its fix, a FAIL line, an
    import that is missing, or a bug (its traceback is in the log)."""
    tail = log[log.rfind("Traceback (most recent call last):") :] if "Traceback" in log else ""
    frames = re.findall(r'^\s+File "([^"]+)", line (\d+)', tail, re.M)
    exc = next((ln for ln in tail.splitlines()[1:] if ln.strip() and ln[0] not in " \t"), "")
    name, _, message = exc.partition(": ")
    name = name.rsplit(".", 1)[-1]
    fail = [ln for ln in log.splitlines() if ln.startswith("FAIL")]
    harness = [str(Path(__file__).resolve().parents[1] / d) for d in ("common", "backends")]
    if exc and name in _USER_ERRORS and frames and frames[-1][0].startswith(tuple(harness)):
        return f"{message}\n(the run's log: {log_path})"
    if name == "ModuleNotFoundError":
        return f"{message}: install it in this environment (`pip install -e .`), then rerun; the log is {log_path}"
    if fail:
        return f"the run failed: {fail[-1]}; its log: {log_path}"
    if exc:
        where = f" at {Path(frames[-1][0]).name}:{frames[-1][1]}" if frames else ""
        return f"the run crashed with {exc}{where}: a bug, not your setup?\nits traceback is in {log_path}"
    if exit_code < 0:
        return f"the run was killed by signal {-exit_code} (out of memory?); its log: {log_path}"
    return f"the run failed (exit {exit_code}) without a summary: see {log_path}"


@main.command()
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON")
@click.option("--torch-device", default="cpu", show_default=True, type=click.Choice(["cpu", "cuda", "mps"]))
@click.option("--mlx-device", default="cpu", show_default=True, type=click.Choice(["cpu", "gpu"]))
@click.option("--steps", default=100, show_default=True, help="training steps compared")
@click.option(
    "--data-dir", type=click.Path(path_type=Path), default=None, help="default: the current prepared data"
)
@_user_errors(interrupted="\ninterrupted: parity was stopped; it wrote nothing, rerun it to start over")
def parity(as_json, torch_device, mlx_device, steps, data_dir) -> None:
    """Check that train_mlx.py and train_torch.py compute the same function (exit 1 if not)."""
    from common.hardware import backend_problem, mlx_cpu_build, openblas_path, warn_reference_blas
    from common.parity import run_parity
    from common.paths import check_prepared

    problem = backend_problem(torch_device)
    if problem:
        raise UserError(f"--torch-device {torch_device} cannot run here: {problem}")
    check_prepared(data_dir)
    # MLX runs in this process: on Linux, restart once with OpenBLAS preloaded (MLX's bundled BLAS is ~20x slower).
    main_spec = getattr(sys.modules["__main__"], "__spec__", None)
    as_program = os.path.basename(sys.argv[0]) == "autoresearch" or (
        main_spec and main_spec.name == "common.cli"
    )
    openblas = openblas_path()
    if mlx_cpu_build() and not os.path.exists(openblas):
        warn_reference_blas()
    elif as_program and mlx_cpu_build() and openblas not in os.environ.get("LD_PRELOAD", ""):
        preloads = " ".join([openblas, os.environ.get("LD_PRELOAD", "")]).strip()
        os.execve(
            sys.executable,
            [sys.executable, "-m", "common.cli", *sys.argv[1:]],
            {**os.environ, "LD_PRELOAD": preloads},
        )
    report = run_parity(data_dir=data_dir, torch_device=torch_device, mlx_device=mlx_device, steps=steps)
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else report.table())
    sys.exit(0 if report.ok else 1)


# -- the research loop -----------------------------------------------------------------------------------------------


def _research_options(fn):
    options = [
        click.option("--tag", default=None, help="research branch autoresearch/TAG (default: the current one)"),
        click.option(
            "--backend", default=None, type=click.Choice(["auto", "mlx", "cuda", "mps", "cpu"]),
            help="default: the branch's pinned one, else check-hardware's pick",
        ),  # fmt: skip
        click.option(
            "--profile", default=None, help="a tier (h100, gpu40, gpu24, gpu8, mac16, cpu, ci...) or with overrides "
            "(ci@20steps, h100@120s); "
            "default: the branch's pinned one, else $AUTORESEARCH_PROFILE or check-hardware's pick",
        ),  # fmt: skip
        click.option("--steps", type=click.IntRange(min=1), default=None, help="fixed-step mode: exactly N steps"),
        click.option("--seeds", type=click.IntRange(min=1), default=None, help="baseline seeds (default: the profile's)"),
        click.option("--timeout", type=click.FloatRange(min=1), default=None, help="seconds per run (default: the profile's)"),
        click.option("--results-dir", type=click.Path(path_type=Path), default=None, help="default runs/TAG"),
        click.option("--data-dir", type=click.Path(path_type=Path), default=None, help="default: the current prepared data"),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _session(tag, backend, profile, steps, seeds, timeout, results_dir, data_dir):
    from common.research.gitops import GitError, Ratchet
    from common.research.loop import LoopError, Session, Settings

    if tag is None:
        try:
            branch = Ratchet(Path.cwd(), "").current_branch() or ""
        except GitError as e:
            raise UserError(str(e)) from e
        if not branch.startswith("autoresearch/"):
            raise UserError(
                f"not on a research branch (on {branch or 'a detached HEAD'}): pass --tag TAG to start or resume "
                "autoresearch/TAG (`autoresearch train` measures without recording)"
            )
        tag = branch.removeprefix("autoresearch/")
    if steps:
        from common.profiles import get_profile

        profile = f"{get_profile(profile).name if profile else _pinned_profile(tag, results_dir)}@{steps}steps"
    settings = Settings(
        root=Path.cwd(), tag=tag, backend=None if backend == "auto" else backend, profile=profile,
        results_dir=results_dir, data_dir=data_dir, seeds=seeds, timeout=timeout,
    )  # fmt: skip
    try:
        return Session(settings)
    except (LoopError, GitError) as e:
        raise UserError(str(e)) from e


def _pinned_profile(tag: str, results_dir) -> str:
    from common.profiles import get_profile
    from common.research.ledger import Ledger

    base = Ledger(results_dir or Path.cwd() / "runs" / tag).baseline
    return base["profile"] if base else get_profile().name


def _research_errors(fn):
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from common.research.gitops import GitError
        from common.research.loop import LoopError

        try:
            return fn(*args, **kwargs)
        except (LoopError, GitError) as e:
            raise UserError(str(e)) from e
        except KeyboardInterrupt:
            click.echo(
                "\ninterrupted: the ledger and the branch are consistent; rerun the same command to resume "
                "(a committed experiment in flight is judged then, a half-done agent turn is undone)",
                err=True,
            )
            sys.exit(130)

    return wrapper


@main.command()
@_research_options
@click.option("--desc", default=None, help="one line for the commit and results.tsv (default: the agent's commits)")
@_research_errors
@_user_errors
def run(tag, backend, profile, steps, seeds, timeout, results_dir, data_dir, desc) -> None:
    """Judge the training script's change: run it, keep or revert it, record it; one line on stdout.

    The first run on a branch measures the baseline (with several seeds, to measure the noise)."""
    session = _session(tag, backend, profile, steps, seeds, timeout, results_dir, data_dir)
    rec = session.run_pending(desc)
    if rec is None:
        best = session.best
        click.echo(
            f"nothing to judge: {session.script} is the best (#{best['id']}, val_bpb {best['val_bpb']:.6f}, "
            f"{best['commit'][:7]}); edit it and rerun"
        )


@main.command()
@_research_options
@click.option("--agent", required=True, help="claude | codex | gemini | aider | example | any shell command")
@click.option("--max", "max_iterations", type=click.IntRange(min=0), default=None, help="stop after N agent turns")
@click.option("--hours", type=click.FloatRange(min=0), default=None, help="start no new turn after H hours")
@click.option("--max-failures", type=click.IntRange(min=1), default=5, show_default=True,
              help="stop after this many failed agent turns in a row")  # fmt: skip
@click.option("--agent-timeout", type=click.FloatRange(min=1), default=1800, show_default=True,
              help="seconds per agent turn")  # fmt: skip
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="experiments in flight at once, each with its own agent: one per GPU (cuda) or per CPU share "
              "(cpu); default 1, or with --ray the cluster's GPUs")  # fmt: skip
@click.option("--ray", "ray_address", default=None, metavar="ADDRESS|auto",
              help='run the experiments as Ray tasks on that cluster (needs pip install -e ".[ray]")')  # fmt: skip
@_research_errors
@_user_errors
def loop(tag, backend, profile, steps, seeds, timeout, results_dir, data_dir, agent, max_iterations, hours,
         max_failures, agent_timeout, workers, ray_address) -> None:  # fmt: skip
    """Run all night: the agent edits the script, the harness runs, keeps or reverts, and records.

    With --workers N (or --ray), N agents propose at once, each in its own worktree, and N experiments run at
    once; one driver keeps one best and one ledger."""
    from common.research.agents import resolve

    if ray_address:
        from common.research.workers import import_ray

        try:
            import_ray()
        except ImportError as e:
            raise UserError(str(e)) from None
    session = _session(tag, backend, profile, steps, seeds, timeout, results_dir, data_dir)
    session.say(f"loop: branch autoresearch/{session.tag}, agent `{resolve(agent)}`, results in {session.results_dir}")
    options = dict(max_iterations=max_iterations, hours=hours, max_failures=max_failures, agent_timeout=agent_timeout)
    from common.research.driver import Driver, has_inflight

    if (workers or 1) == 1 and not ray_address and not has_inflight(session.results_dir):
        session.loop(resolve(agent), **options)  # one experiment at a time, in this checkout
        return
    from common.research.workers import LocalWorkers, RayWorkers

    if ray_address:
        try:
            pool = RayWorkers(ray_address, workers, session.backend)
        except ConnectionError as e:
            raise UserError(str(e)) from None
    else:
        pool = LocalWorkers(workers or 1, session.backend)
    session.say(f"loop: {pool.note}; agents work in {session.results_dir / 'worktrees'}")
    Driver(session, pool).loop(resolve(agent), **options)


@main.command()
@click.option("--tag", default=None, help="default: the current research branch, or the only one recorded")
@click.option("--results-dir", type=click.Path(path_type=Path), default=None, help="default runs/TAG")
@click.option("--top", type=click.IntRange(min=0), default=10, show_default=True)
@click.option("--kept-only", is_flag=True, help="list only kept experiments")
@click.option("--json", "as_json", is_flag=True)
@click.option("--plot", type=click.Path(path_type=Path), default=None, help="write the progress plot (PNG)")
@_user_errors
def results(tag, results_dir, top, kept_only, as_json, plot) -> None:
    """What a research branch found: counts, baseline vs best, kept changes, progress plot."""
    from common.research import report
    from common.research.ledger import LEDGER, read_jsonl

    directory = results_dir or _results_dir_for(tag)
    records = read_jsonl(directory / LEDGER)
    if not records:
        raise UserError(f"no experiments recorded in {directory}: start with `autoresearch run --tag TAG`")
    rep = report.summarize(records, top=top, kept_only=kept_only)
    click.echo(json.dumps(rep, indent=2) if as_json else report.format_text(rep))
    if plot:
        try:
            report.plot(records, plot)
        except ImportError as e:
            raise UserError('--plot needs matplotlib: pip install -e ".[plot]" (the text report is above)') from e
        click.echo(f"plot: {plot}", err=True)


def _results_dir_for(tag: str | None) -> Path:
    runs = Path.cwd() / "runs"
    if tag:
        return runs / tag.removeprefix("autoresearch/")
    try:
        from common.research.gitops import Ratchet

        branch = Ratchet(Path.cwd(), "").current_branch() or ""
    except Exception:
        branch = ""
    if branch.startswith("autoresearch/"):
        return runs / branch.removeprefix("autoresearch/")
    recorded = sorted(p.parent.name for p in runs.glob("*/ledger.jsonl"))
    if len(recorded) == 1:
        return runs / recorded[0]
    raise UserError(
        f"which research branch? pass --tag ({', '.join(recorded) or 'none recorded under runs/'})"
    )


@main.command()
@_backend_opt
@click.option("--turns", type=click.IntRange(min=0), default=3, show_default=True, help="agent turns")
@click.option("--steps", type=click.IntRange(min=1), default=50, show_default=True, help="training steps per run")
@click.option("--seeds", type=click.IntRange(min=1), default=None, help="baseline seeds (default: the profile's)")
@_research_errors
@_user_errors
def demo(backend, turns, steps, seeds) -> None:
    """The research loop on the embedded offline demo data: a scripted agent, a few turns, the table and plot.

    Runs in a scratch worktree on a new branch autoresearch/demo-<time>: your checkout is not touched."""
    from common.prepare import prepare as run_prepare
    from common.research.demo import run_demo

    data_dir = run_prepare("demo")
    run_demo(Path.cwd(), data_dir, None if backend == "auto" else backend, turns, steps, seeds)


if __name__ == "__main__":
    main()
