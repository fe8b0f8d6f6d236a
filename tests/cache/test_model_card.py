"""The model card's sentence on how `cmesh cache train` reproduces an artifact."""

from __future__ import annotations

from cmesh.cache_eval import _reproduce


def test_a_run_in_one_go_is_one_command() -> None:
    assert _reproduce({"steps": 2000}, 2000).startswith("`cmesh cache train --steps 2000` ")


def test_a_stopped_run_names_where_it_stopped() -> None:
    assert "`cmesh cache train --steps 2000 --stop-at 1500`" in _reproduce({"steps": 1500}, 2000)


def test_an_extended_run_is_two_commands_on_one_checkpoint() -> None:
    text = _reproduce({"steps": 3000, "resumed_from_step": 2000, "extended_from_steps": 2000},
                      3000)
    assert "`cmesh cache train --steps 2000 --checkpoint CKPT`" in text
    assert "`cmesh cache train --steps 3000 --checkpoint CKPT`" in text
    assert "from step 2000" in text


def test_a_run_extended_twice_is_three_commands() -> None:
    text = _reproduce({"steps": 4000, "resumed_from_step": 3000,
                       "extended_from_steps": [2000, 3000]}, 4000)
    commands = [f"`cmesh cache train --steps {n} --checkpoint CKPT`" for n in (2000, 3000, 4000)]
    assert all(c in text for c in commands)
    assert text.index(commands[0]) < text.index(commands[1]) < text.index(commands[2])
    assert "from step 3000" in text
