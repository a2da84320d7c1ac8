"""The `autoresearch` command line.

    autoresearch demo                       # prepare the offline demo data and run one short experiment
    autoresearch prepare [--dataset ...]    # data + tokenizer + token shards
    autoresearch train --backend mlx        # one experiment with the active profile
    autoresearch check-hardware             # JSON on stdout, summary on stderr

Subcommands import their heavy modules lazily, so `autoresearch --help` is instant.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from common.profiles import PROFILES


class UserError(click.ClickException):
    """An error the user can fix: printed as one line, exit status 1, no traceback."""


def _user_errors(fn):
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from common.shards import ShardError
        from common.sources import SourceError
        from common.tokenizer import TooLittleText

        errors: tuple = (SourceError, ShardError, TooLittleText, FileNotFoundError, ValueError)
        try:
            from common.download import DownloadError

            errors += (DownloadError,)
        except ImportError:
            pass
        try:
            return fn(*args, **kwargs)
        except KeyboardInterrupt:
            click.echo(
                "\ninterrupted: everything finished so far is kept; rerun the same command to resume",
                err=True,
            )
            sys.exit(130)
        except OSError as e:
            if e.errno == 28:  # ENOSPC
                raise UserError(
                    f"disk full while writing {e.filename or 'data'}: free some space and rerun to resume"
                ) from e
            if isinstance(e, FileNotFoundError):
                raise UserError(str(e)) from e
            raise
        except errors as e:
            raise UserError(str(e)) from e

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """autoresearch: fixed-time LLM-pretraining experiments, MLX first, with a PyTorch twin at parity."""


def _online(host: str = "huggingface.co") -> bool:
    import socket

    try:
        socket.create_connection((host, 443), timeout=3).close()
        return True
    except OSError:
        return False


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
@click.option("--vocab-size", default=8192, show_default=True)
@click.option(
    "--num-shards",
    default=10,
    show_default=True,
    help="climbmix training shards to download (the val shard is pinned)",
)
@click.option("--workers", default=8, show_default=True, help="parallel downloads")
@_user_errors
def prepare(dataset, data_dir, vocab_size, num_shards, workers) -> None:
    """Download or generate text, train the tokenizer, tokenize everything once."""
    from common.prepare import prepare as run_prepare

    if dataset is None:
        dataset = "climbmix" if _online() else "demo"
        click.echo(
            f"prepare: --dataset not given; using {dataset} ({'online' if dataset == 'climbmix' else 'offline'})",
            err=True,
        )
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


_backend_opt = click.option(
    "--backend", default="auto", show_default=True, type=click.Choice(["auto", "mlx", "cuda", "mps", "cpu"])
)
_profile_opt = click.option(
    "--profile",
    default=None,
    type=click.Choice(list(PROFILES)),
    help="default: $AUTORESEARCH_PROFILE or check-hardware's pick",
)


@main.command()
@_backend_opt
@_profile_opt
@click.option(
    "--log", "log_path", type=click.Path(path_type=Path), default=Path("run.log"), show_default=True
)
@_user_errors
def train(backend, profile, log_path) -> None:
    """Run one fixed-time experiment and print its summary."""
    _train(backend, profile, log_path)


def _train(backend: str, profile: str | None, log_path: Path, data_dir: Path | None = None) -> dict:
    from common.profiles import get_profile
    from common.runner import resolve_backend, run_experiment

    backend = resolve_backend(backend)
    prof = get_profile(profile)
    click.echo(
        f"train: backend {backend}, profile {prof.name} ({prof.description}); log {log_path}", err=True
    )
    result = run_experiment(backend, prof.name, log_path, data_dir)
    if result["exit_code"] != 0 or "val_bpb" not in result:
        raise UserError(f"the run failed (exit {result['exit_code']}): see {log_path}")
    return result


@main.command()
@_backend_opt
@click.option("--profile", default="ci", show_default=True, type=click.Choice(list(PROFILES)))
@_user_errors
def demo(backend, profile) -> None:
    """Prepare the embedded offline demo data and run one short experiment on it."""
    from common.prepare import prepare as run_prepare

    data_dir = run_prepare("demo")
    _train(backend, profile, Path("run.log"), data_dir)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON")
@click.option("--torch-device", default="cpu", show_default=True, type=click.Choice(["cpu", "cuda", "mps"]))
@click.option("--mlx-device", default="cpu", show_default=True, type=click.Choice(["cpu", "gpu"]))
@click.option("--steps", default=100, show_default=True, help="training steps compared")
@click.option(
    "--data-dir", type=click.Path(path_type=Path), default=None, help="default: the current prepared data"
)
@_user_errors
def parity(as_json, torch_device, mlx_device, steps, data_dir) -> None:
    """Check that train_mlx.py and train_torch.py compute the same function (exit 1 if not)."""
    from common.parity import run_parity
    from common.runner import OPENBLAS

    # MLX runs in this process: on Linux, restart once with OpenBLAS preloaded (MLX's bundled BLAS is ~30x slower).
    main_spec = getattr(sys.modules["__main__"], "__spec__", None)
    as_program = os.path.basename(sys.argv[0]) == "autoresearch" or (
        main_spec and main_spec.name == "common.cli"
    )
    if as_program and sys.platform == "linux" and os.path.exists(OPENBLAS) and "LD_PRELOAD" not in os.environ:
        os.execve(
            sys.executable,
            [sys.executable, "-m", "common.cli", *sys.argv[1:]],
            {**os.environ, "LD_PRELOAD": OPENBLAS},
        )
    report = run_parity(data_dir=data_dir, torch_device=torch_device, mlx_device=mlx_device, steps=steps)
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else report.table())
    sys.exit(0 if report.ok else 1)


if __name__ == "__main__":
    main()
