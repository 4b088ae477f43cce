"""``pps-demo`` (or ``python -m demo``): the end-to-end scenario on the embedded default.

The demo sits above the HTTP edge (it starts the API in-process and talks to it over HTTP), so it is its own
command rather than a subcommand of the operator's ``pps`` CLI, which belongs to the core.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

app = typer.Typer(add_completion=False, help="Run the end-to-end scenario of PPS and check every step.")


@app.command()
def demo(
    data_dir: Annotated[Path, typer.Option(help="fresh directory for the demo's database and keys")] = Path(
        ".pps-demo"
    ),
) -> None:
    """Run the end-to-end scenario on the embedded default (SQLite, in-process) and check every step."""
    from demo.scenario import run_demo

    if not run_demo(data_dir, Console()):
        raise typer.Exit(1)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
