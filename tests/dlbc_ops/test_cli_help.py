"""`dlbc ... --help` tells a first-time user what each command does and what each option means.

The walk covers every parser of the real `dlbc` CLI (dlbc_ops.cli.main.build_parser), so a new
subcommand or option without a description, help text or stated default fails here.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import pytest

from dlbc_ops.cli.common import HelpFormatter
from dlbc_ops.cli.main import build_parser


def _parsers() -> Iterator[tuple[str, argparse.ArgumentParser]]:
    def walk(name: str, p: argparse.ArgumentParser
             ) -> Iterator[tuple[str, argparse.ArgumentParser]]:
        yield name, p
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub, child in action.choices.items():
                    yield from walk(f"{name} {sub}", child)

    return walk("dlbc", build_parser())


PARSERS = dict(_parsers())


def _options(p: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in p._actions
            if not isinstance(a, argparse._HelpAction | argparse._SubParsersAction)]


def test_the_walk_sees_every_command() -> None:
    assert {"dlbc mine", "dlbc verify", "dlbc query winners", "dlbc keys show",
            "dlbc task submit"} <= set(PARSERS)


@pytest.mark.parametrize("name", sorted(PARSERS))
def test_every_command_has_a_description(name: str) -> None:
    description = PARSERS[name].description or ""
    assert len(description.split()) >= 5, f"`{name} --help` does not say what it does"


@pytest.mark.parametrize("name", sorted(PARSERS))
def test_every_subcommand_is_listed_with_a_summary(name: str) -> None:
    for action in PARSERS[name]._actions:
        if isinstance(action, argparse._SubParsersAction):
            listed = {c.dest: c.help for c in action._choices_actions}
            assert set(listed) == set(action.choices), name
            assert all(listed.values()), f"{name}: subcommands without a summary: {listed}"


@pytest.mark.parametrize("name", sorted(PARSERS))
def test_every_option_has_help_and_states_its_default(name: str) -> None:
    p = PARSERS[name]
    formatter = p._get_formatter()
    for action in _options(p):
        flag = "/".join(action.option_strings) or action.dest
        assert action.help and action.help != argparse.SUPPRESS, f"{name} {flag}: no help"
        # None, False and an empty list (a repeatable option) say nothing worth printing
        meaningful = action.option_strings and not isinstance(action.default, bool) \
            and action.default not in (None, argparse.SUPPRESS, [])
        if meaningful:
            text = formatter._expand_help(action)
            assert "default" in text, f"{name} {flag}: help does not state its default"


@pytest.mark.parametrize("name", ["dlbc mine", "dlbc verify"])
def test_sidecar_help_says_what_it_needs_running_and_how_to_start_it(
        name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args([*name.split()[1:], "--help"])
    out = capsys.readouterr().out
    assert f"\n  {name} --" in out  # a typical invocation, indented as written
    assert "Needs" in out and "--rpc" in out


def test_help_formatter_keeps_examples_and_wraps_prose() -> None:
    f = HelpFormatter("dlbc", width=40)
    text = f._fill_text("one two three four five six seven eight nine ten eleven twelve\n\n"
                        "  dlbc mine --key miner1 --rpc http://127.0.0.1:26657", 40, "")
    prose, example = text.split("\n\n")
    assert all(len(line) <= 40 for line in prose.splitlines()) and "\n" in prose
    assert example == "  dlbc mine --key miner1 --rpc http://127.0.0.1:26657"


def test_help_formatter_appends_a_default_only_where_it_means_something() -> None:
    p = argparse.ArgumentParser(formatter_class=HelpFormatter)
    p.add_argument("--port", type=int, default=8701, help="port")
    p.add_argument("--limit", type=int, default=None, help="limit")
    p.add_argument("--flag", action="store_true", help="flag")
    p.add_argument("--said", default="x", help="said (default: x)")
    p.add_argument("--each", action="append", default=[], help="each (repeat)")
    f = p._get_formatter()
    helps = {a.dest: f._expand_help(a) for a in p._actions if a.dest != "help"}
    assert helps == {"port": "port (default: 8701)", "limit": "limit", "flag": "flag",
                     "said": "said (default: x)", "each": "each (repeat)"}
