"""Engine fetching with Rich progress, shared by `msgctl up` and `msgctl infra fetch`."""

from __future__ import annotations

from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from msgctl.cli.common import console
from msgctl.infra import fetch
from msgctl.infra.catalog import CATALOG
from msgctl.topology import Topology


def wanted(topo: Topology, engine: str = "all") -> list[tuple[str, str]]:
    """(engine, version) pairs the topology provisions from Maven, in catalog order."""
    out: list[tuple[str, str]] = []
    for region in topo.regions:
        for spec in region.engines.values():
            if (spec.provisioned and CATALOG[spec.engine].source == "maven"
                    and engine in ("all", spec.engine)
                    and (spec.engine, spec.version) not in out):
                out.append((spec.engine, spec.version))
    return out


def ensure(pairs: list[tuple[str, str]], quiet: bool = False) -> list[fetch.Fetched]:
    """Fetch what is missing from the cache, with a spinner per engine; instant when cached."""
    results = []
    missing = [(e, v) for e, v in pairs if fetch.cached(e, v) is None]
    if not missing:
        return [fetch.cached(e, v) for e, v in pairs]  # type: ignore[misc]
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                  console=console, transient=True, disable=quiet) as progress:
        for engine, version in pairs:
            task = progress.add_task(f"fetching {engine} {version} with Maven…")

            def show(line: str, task: int = task, name: str = f"{engine} {version}") -> None:
                progress.update(task, description=f"fetching {name}: {line}")

            got = fetch.fetch(engine, version, on_progress=show)
            progress.remove_task(task)
            if not got.cached and not quiet:
                console.print(f"fetched {engine} {version}: {got.jars} jars, "
                              f"{got.bytes / 1e6:.0f} MB in {got.seconds:.1f}s → {got.path}")
            results.append(got)
    return results
