"""The `infiniteflow` command: run a service, operate the stack, and the user-facing tools."""

from __future__ import annotations

import importlib
from enum import StrEnum

import typer

from services.admin import admin_app
from services.gpu_interp.commands import register as register_engine_commands
from services.supervisor import services_app
from services.user_commands import register as register_user_commands

app = typer.Typer(no_args_is_help=True, help="InfiniteFlow: raise the frame rate of videos.")
app.add_typer(admin_app, name="admin")
app.add_typer(services_app, name="services")
register_engine_commands(app)
register_user_commands(app)


class Service(StrEnum):
    """The five services; each is `services/<name>/app.py` with a `main()`."""

    INGEST = "ingest"
    SPLITTER = "splitter"
    GPU_INTERP = "gpu_interp"
    MUXER = "muxer"
    NOTIFIER = "notifier"


@app.command()
def run(service: Service) -> None:
    """Start one service in the foreground (configured from the environment / infra/local.env)."""
    module = importlib.import_module(f"services.{service.value}.app")
    module.main()


@app.command()
def demo(
    multiplier: int = typer.Option(2, help="2, 4 or 8"),
    engine: str = typer.Option("rife", help="rife or flow"),
) -> None:
    """The main job end to end: sample clip → bucket drop → progress → signed webhook → ffprobe summary."""
    from services.demo import demo as run_demo

    run_demo(multiplier=multiplier, engine=engine)


def main() -> None:
    """Console entry point."""
    app()
