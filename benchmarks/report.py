"""Benchmark figures into the README: each benchmark rewrites its own marked section.

A section sits between `<!-- begin NAME -->` and `<!-- end NAME -->` in README.md and holds what
the benchmark's last run printed (figures, the command, the machine): no figure there is typed
by hand, and rerunning the benchmark refreshes it.
"""
import os
import platform

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def machine() -> str:
    """'N CPU cores (processor)', for the line saying where figures come from."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            model = next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{os.cpu_count()} CPU cores ({model})"


def update_readme(name: str, text: str, readme: str = README) -> None:
    """Replaces the README's section `name` with `text`; fails if the markers are missing."""
    begin, end = f"<!-- begin {name} -->", f"<!-- end {name} -->"
    with open(readme) as file:
        content = file.read()
    if begin not in content or end not in content:
        raise ValueError(f"{readme} has no section {begin} ... {end}: add the two markers where the "
                         "figures belong")
    before, rest = content.split(begin, 1)
    after = rest.split(end, 1)[1]
    with open(readme, "w") as file:
        file.write(f"{before}{begin}\n{text.strip()}\n{end}{after}")
