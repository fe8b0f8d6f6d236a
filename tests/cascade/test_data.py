"""Reading RouteLLM-format tables: good files, and errors that name the line."""

from __future__ import annotations

from pathlib import Path

import pytest

from cascade.data import TableError, read_contaminated, read_csv, read_tables

HEADER = "prompt,weak-m,strong-m,weak-m_response\n"


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_reads_rows_and_ignores_extra_columns(tmp_path: Path) -> None:
    rows = '"What is 2+2?\nAnswer:",False,True,"5"\nHi,True,true,x\n'
    path = write(tmp_path / "t.csv", HEADER + rows)
    table = read_csv(path)
    assert table.prompts == ["What is 2+2?\nAnswer:", "Hi"]
    assert table.weak.tolist() == [False, True]
    assert table.strong.tolist() == [True, True]
    assert (table.weak_model, table.strong_model) == ("weak-m", "strong-m")


def test_missing_model_column_names_the_header_line(tmp_path: Path) -> None:
    path = write(tmp_path / "t.csv", "prompt,weak-m\nHi,True\n")
    with pytest.raises(TableError, match=r"t\.csv:1: missing the strong model column"):
        read_csv(path)
    with pytest.raises(TableError, match="missing the weak model column 'other'"):
        read_csv(write(tmp_path / "u.csv", HEADER + "Hi,True,True,x\n"), weak_model="other")


def test_non_boolean_value_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path / "t.csv", HEADER + "a,True,True,x\nb,True,maybe,x\n")
    with pytest.raises(TableError, match=r"t\.csv:3: column 'strong-m' must be True or False"):
        read_csv(path)


def test_line_numbers_count_multiline_prompts(tmp_path: Path) -> None:
    path = write(tmp_path / "t.csv", HEADER + '"a\nb\nc",True,True,x\nd,yes,True,x\n')
    with pytest.raises(TableError, match=r"t\.csv:5: column 'weak-m'"):
        read_csv(path)


def test_folder_groups_rows_by_file_and_excludes_contaminated(tmp_path: Path) -> None:
    write(tmp_path / "mmlu_anatomy.csv", HEADER + "a,True,True,x\nb,False,True,x\n")
    write(tmp_path / "mmlu_virology.csv", HEADER + "c,False,False,x\n")
    jsonl = write(tmp_path / "c.jsonl", '{"train_prompt": "z", "eval_prompt": "  b "}\n')
    table = read_tables(tmp_path, exclude=read_contaminated(jsonl))
    assert table.prompts == ["a", "c"]
    assert table.groups == ["anatomy", "virology"]


def test_empty_folder_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(TableError, match="no such CSV file or folder"):
        read_tables(tmp_path)
