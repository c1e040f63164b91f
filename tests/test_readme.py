"""Every command of ours in the READMEs' code blocks names what exists: the program, its config file,
each `--config.*` field of that config, and each other flag (defined by the program or by absl).

A command of ours is `python main.py ...` or `python -m blvnet_jax.X | input_pipeline.X |
benchmarks.X ...` (any `python`, `python3` or `.venv/bin/python`), in a fenced shell block, with
`\\` continuations, `# comments`, `&&` chains and quoted sub-commands (`--command="... && python
main.py ..."`). Values are not checked: `N`, `my_videos/` and `runs/...` are the reader's.
"""
import os
import re
import shlex

import absl.app  # noqa: F401  (defines absl's own flags)
import absl.logging  # noqa: F401
import pytest
from absl import flags

from blvnet_jax import cli

READMES = ("README.md", "input_pipeline/README.md")
PACKAGES = ("blvnet_jax", "input_pipeline", "benchmarks")
SHELL_LANGUAGES = ("", "bash", "sh", "shell", "console")
SEPARATORS = {"&&", "||", ";", "|", "&"}
PYTHON = re.compile(r"(\S*/)?python3?(\.\d+)?")
DEFINED = re.compile(r"DEFINE_\w+\(\s*[\"'](\w+)[\"']|add_argument\(\s*[\"']--([\w-]+)[\"']")
# What absl defines beyond absl.app's and absl.logging's modules: app.run's help flags and the
# parser's own.
ABSL_SPECIAL = {"help", "helpshort", "helpfull", "helpxml", "flagfile", "undefok"}


def absl_flags() -> set[str]:
    """Names (and short names) of the flags every absl program has."""
    names = set(ABSL_SPECIAL)
    for module, defined in flags.FLAGS.flags_by_module_dict().items():
        if module.startswith("absl."):
            names |= {name for flag in defined for name in (flag.name, flag.short_name) if name}
    return names


def shell_blocks(markdown: str) -> list[str]:
    """The contents of the fenced code blocks in a shell language (or none)."""
    return [body for language, body in re.findall(r"^```(\w*)\n(.*?)^```", markdown, re.S | re.M)
            if language in SHELL_LANGUAGES]


def tokens(line: str) -> list[str]:
    """Shell words of one logical line, comments dropped, `&&`/`;`/`|` as their own words; a quoted
    word holding a command (`--command="cd x && python main.py ..."`) is followed by its words."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    words = []
    for word in lexer:
        words.append(word)
        if " " in word:
            words += ["&&", *tokens(word.split("=", 1)[-1])]
    return words


def commands(block: str) -> list[tuple[str, list[str]]]:
    """`(program source file, arguments)` of each command of ours in a shell block."""
    found = []
    for line in block.replace("\\\n", " ").splitlines():
        words = tokens(line)
        for i, word in enumerate(words[:-1]):
            if not PYTHON.fullmatch(word):
                continue
            if words[i + 1] == "-m" and i + 2 < len(words) and words[i + 2].split(".")[0] in PACKAGES:
                module, start = words[i + 2], i + 3
                source = module.replace(".", "/") + ".py"
                if os.path.isdir(module.replace(".", "/")):
                    source = module.replace(".", "/") + "/__main__.py"
            elif words[i + 1].endswith(".py"):
                source, start = words[i + 1], i + 2
            else:
                continue  # python -m pytest, python -c, python3 -m venv: not ours
            end = next((j for j in range(start, len(words)) if words[j] in SEPARATORS), len(words))
            found.append((source, words[start:end]))
    return found


def defined_flags(source: str) -> set[str]:
    with open(source) as f:
        return {name for pair in DEFINED.findall(f.read()) for name in pair if name}


def problems(source: str, args: list[str], builtins: set[str]) -> list[str]:
    """What in `python <source> <args>` names nothing; [] if all of it exists."""
    if not os.path.isfile(source):
        return [f"{source}: no such program"]
    defined = defined_flags(source) | builtins
    found, config = [], None
    args = [arg.strip("[]") for arg in args]  # `[--flag=v]`: an optional flag, still a flag
    names = [arg[2:].split("=", 1)[0] for arg in args if arg.startswith("--")]
    for i, arg in enumerate(args):
        if arg.startswith("--config=") or (arg == "--config" and i + 1 < len(args)):
            config = arg.split("=", 1)[1] if "=" in arg else args[i + 1]
    for name in names:
        base = name.split(".", 1)[0]
        if base not in defined and not (base.startswith("no") and base[2:] in defined):
            found.append(f"--{name}: no such flag in {source}")
    if config is not None:
        missing = cli.missing_file(config.split(":", 1)[0])
        if missing:
            return found + [f"--config={config}: {missing}"]
        loaded = cli.load_config(config)
        for name in names:
            if name.startswith("config."):
                why = cli.missing_field(loaded, name[len("config."):])
                if why:
                    found.append(f"--{name}: {why}")
    elif any(name.startswith("config.") for name in names):
        found.append(f"{source}: --config.* overrides without --config=FILE")
    return found


def readme_problems(markdown: str) -> tuple[int, list[str]]:
    """(number of commands of ours, problems of each, prefixed with the program)."""
    builtins = absl_flags()
    count, found = 0, []
    for block in shell_blocks(markdown):
        for source, args in commands(block):
            count += 1
            command = f"python {source} {' '.join(args)}"
            found += [f"{command}\n    {problem}" for problem in problems(source, args, builtins)]
    return count, found


@pytest.mark.parametrize("readme", READMES)
def test_every_command_names_existing_programs_configs_fields_and_flags(readme):
    with open(readme) as f:
        count, found = readme_problems(f.read())
    assert count >= 3  # the parser found the commands at all
    assert not found, "\n".join(found)


def test_the_main_readme_commands_are_all_found():
    with open("README.md") as f:
        programs = {source for block in shell_blocks(f.read()) for source, _ in commands(block)}
    assert {"main.py", "input_pipeline/prepare_tfds.py", "blvnet_jax/convert.py", "blvnet_jax/predict.py",
            "blvnet_jax/export.py"} <= programs


def test_a_made_up_flag_field_config_or_program_is_caught():
    markdown = "\n".join([
        "```bash",
        "python main.py --config=configs/demo.py --workdir=/tmp/x \\",
        "    --config.model.widht=8 --made_up_flag=1   # a comment --not_a_flag",
        "python main.py --config=configs/no_such_config.py --workdir=/tmp/x",
        "cd x && .venv/bin/python -m blvnet_jax.no_such_program --workdir=/tmp/x",
        'gcloud ssh --command="cd x && python3 -m input_pipeline.prepare_tfds --dataset=v --nooverwrite --bogus"',
        "python -m pytest -q --whatever   # not ours: not checked",
        "python -m input_pipeline.prepare_tfds --dataset=x [--max_fsp=0]",
        "```",
        "```python",
        "python main.py --not_a_shell_block",
        "```",
    ])
    count, found = readme_problems(markdown)
    assert count == 5
    assert [line.splitlines()[1].strip() for line in found] == [
        "--made_up_flag: no such flag in main.py",
        "--config.model.widht: config.model has no field 'widht'; did you mean 'width'?",
        "--config=configs/no_such_config.py: no such file (a relative path starts from " + os.getcwd() + ")",
        "blvnet_jax/no_such_program.py: no such program",
        "--bogus: no such flag in input_pipeline/prepare_tfds.py",
        "--max_fsp: no such flag in input_pipeline/prepare_tfds.py",
    ]


def test_absl_flags_and_negated_booleans_are_accepted():
    markdown = "```bash\npython main.py --config=configs/demo.py --workdir=w --alsologtostderr --v=1 " \
               "--nocheck_data --helpfull\n```"
    assert readme_problems(markdown) == (1, [])


@pytest.mark.parametrize("readme", READMES)
def test_no_path_of_a_particular_machine(readme):
    with open(readme) as f:
        text = f.read()
    # Where this checkout and the user running the tests live: machine-specific, never in a README.
    checkout, home = os.path.dirname(os.path.dirname(os.path.abspath(__file__))), os.path.expanduser("~")
    assert f"{checkout}/" not in text and f"{home}/" not in text
