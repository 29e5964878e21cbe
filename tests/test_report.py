"""`clearlstm report` and `clearlstm figure`: the report's numbers are the Trace's, and the
file needs nothing from the network."""

from __future__ import annotations

import base64
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch

from clearlstm.cli.main import main
from clearlstm.teach.explain import explain_sequence
from clearlstm.teach.seed import COMPANIES
from clearlstm.viz.report import build_report
from clearlstm.viz.saved_models import load_saved_model
from clearlstm.viz.subject import statquest_subject


class Tables(HTMLParser):
    """Every table with an id: its rows of ``data-v`` values (None for plain cells)."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[float | None]]] = {}
        self.current: list[list[float | None]] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "table" and attributes.get("id"):
            self.current = self.tables.setdefault(attributes["id"], [])
        elif tag == "tr" and self.current is not None:
            self.current.append([])
        elif tag == "td" and self.current is not None:
            value = attributes.get("data-v")
            self.current[-1].append(None if value is None else float(value))

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self.current = None


def tables_of(document: str) -> dict[str, np.ndarray]:
    parser = Tables()
    parser.feed(document)
    return {k: [r for r in rows if r] for k, rows in parser.tables.items()}


def numbers_by_column(rows: list[list[float | None]]) -> np.ndarray:
    """Table cells after the step column, as a float array (steps, columns)."""
    return np.array([row[1:] for row in rows], dtype=np.float64)


@pytest.fixture(scope="module")
def statquest_report() -> tuple[str, object]:
    subject = statquest_subject(COMPANIES["B"])
    return build_report(subject), subject.run()


def test_report_numbers_equal_the_trace(statquest_report):
    document, trace = statquest_report
    tables = tables_of(document)
    rec = trace[0, 0]
    got = numbers_by_column(tables["numbers-l0-d0-u0"])  # x, z_i, z_f, z_g, z_o, f, i, g, o, c, h
    expected = np.column_stack(
        [
            np.array(COMPANIES["B"]),
            rec.pre_activation[:, 0, :, 0].numpy(),
            *(
                getattr(rec, name)[:, 0, 0].numpy()
                for name in (
                    "forget_gate",
                    "input_gate",
                    "potential_memory",
                    "output_gate",
                    "c",
                    "h",
                )
            ),
        ]
    )
    np.testing.assert_array_equal(got, expected)  # exact: full precision travels in data-v

    (memory,) = tables["memory-l0-d0"]
    summary = trace.memory_summary()[0]
    assert memory[1:] == [summary.mean_forget_gate, summary.half_life]
    retention = numbers_by_column(tables["retention-l0-d0"])[:, 0]
    np.testing.assert_array_equal(retention, trace.retention(0)[:, 0, 0].numpy())

    walk = explain_sequence(COMPANIES["B"], 0.0, 0.0)
    arithmetic = numbers_by_column(tables["walkthrough"])
    expected = [
        [s.x, s.c_prev, s.h_prev, s.retained, s.added, s.c, s.tanh_c, s.h] for s in walk.steps
    ]
    np.testing.assert_array_equal(arithmetic, np.array(expected))


def test_report_explains_in_words_and_shows_the_shown_numbers(statquest_report):
    document, _ = statquest_report
    assert "The forget gate keeps 96.3% of the long-term memory" in document
    assert "Final output (the prediction): <strong>0.969393</strong>" in document
    assert '<td data-v="0.9693934' in document and ">0.969393</td>" in document


def test_report_is_self_contained(statquest_report):
    document, _ = statquest_report
    assert document.startswith("<!DOCTYPE html>")
    for needle in ("<script", "<link", "<iframe", "@import"):
        assert needle not in document.lower()
    assert not re.search(r"""(src|href)\s*=\s*["'](https?:)?//""", document)
    assert not re.search(r"url\(\s*['\"]?(https?:)?//", document)
    # Four unit diagrams (one per step), the heatmaps and the retention curves, inline.
    assert document.count("<svg") == 6 and document.count("<figure") == 6
    ids = re.findall(r'\bid="([^"]+)"', document)
    assert len(ids) == len(set(ids)), "figure ids clash"
    for reference in re.findall(r'(?:href="#|url\(#)([^")]+)', document):
        assert reference in ids


def test_report_with_png_images_decodes():
    document = build_report(statquest_subject([1.0]), image_format="png")
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', document)
    assert len(images) == 3
    for data in images:
        assert base64.b64decode(data)[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_cli_default_and_saved_model(tmp_path: Path, models_folder: Path):
    out = tmp_path / "report.html"
    assert main(["report", "--out", str(out)]) == 0
    document = out.read_text()
    assert "What StatQuest&#x27;s LSTM unit keeps and forgets" in document
    assert "0.006393" in document  # Company A's prediction, the default sequence

    sequence = [0.1, 0.5, -0.3, 0.8, 0.2]
    model_out = tmp_path / "model.html"
    wave = models_folder / "wave"
    assert main(["report", "--model", str(wave), "--sequence", "0.1,0.5,-0.3,0.8,0.2",
                 "--out", str(model_out), "--images", "png"]) == 0  # fmt: skip
    tables = tables_of(model_out.read_text())
    trace = load_saved_model(wave).subject_from_numbers(sequence).run()
    rec = trace[0, 0]
    for unit in range(6):
        got = numbers_by_column(tables[f"numbers-l0-d0-u{unit}"])
        np.testing.assert_array_equal(got[:, 0], np.array(sequence))
        np.testing.assert_array_equal(got[:, 5], rec.forget_gate[:, 0, unit].double().numpy())
        np.testing.assert_array_equal(got[:, 10], rec.h[:, 0, unit].double().numpy())
    assert "walkthrough" not in tables  # the walkthrough is for one-unit LSTMs only


def test_report_of_a_text_model_labels_characters(tmp_path: Path, models_folder: Path):
    text = tmp_path / "line.txt"
    text.write_text("to be\n")
    out = tmp_path / "words.html"
    assert main(["report", "--model", str(models_folder / "words"), "--text", str(text),
                 "--out", str(out)]) == 0  # fmt: skip
    document = out.read_text()
    assert "model words" in document and "Text (5 characters): &#x27;to be&#x27;" in document
    assert "embedding[0]" not in document.split("<h2")[0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--text", "x.txt"], "--text needs --model"),
        (["--sequence", "1,2", "--csv", "a.csv"], "give one of --sequence, --csv or --text"),
        (["--out", "no/such/folder/r.html"], "does not exist"),
        (["--csv", "missing.csv"], "missing.csv: no such file"),
        (["--model", "no-such-model"], "no such model directory"),
    ],
)
def test_report_cli_errors(tmp_path: Path, monkeypatch, capsys, args: list[str], message: str):
    monkeypatch.chdir(tmp_path)
    assert main(["report", *args]) == 1
    assert message in capsys.readouterr().err.replace("\n", "")


@pytest.mark.parametrize(
    ("args", "suffix"),
    [
        (["heatmap"], "svg"),
        (["retention", "--sequence", "1,0.5,0.25,1", "--start", "2"], "png"),
        (["unit", "--input", "-10"], "png"),
        (["unit", "--sequence", "0,0.5,0.25,1", "--step", "4"], "svg"),
    ],
)
def test_figure_cli_writes_each_kind(tmp_path: Path, capsys, args: list[str], suffix: str):
    out = tmp_path / f"figure.{suffix}"
    assert main(["figure", *args, "--out", str(out)]) == 0
    assert out.stat().st_size > 10_000
    assert f"wrote {out}" in capsys.readouterr().out.replace("\n", "")


def test_figure_cli_of_a_saved_model_and_its_errors(tmp_path: Path, models_folder: Path, capsys):
    wave = str(models_folder / "wave")
    out = tmp_path / "wave.png"
    # Without --sequence a forecaster reads the end of its training series.
    assert main(["figure", "heatmap", "--model", wave, "--out", str(out)]) == 0
    assert out.stat().st_size > 10_000
    assert main(["figure", "unit", "--model", wave, "--sequence", "1,2"]) == 1
    assert "draws a one-unit LSTM" in capsys.readouterr().err.replace("\n", "")
    assert main(["figure", "retention", "--start", "9"]) == 1
    assert "--start must be between 1 and 4" in capsys.readouterr().err.replace("\n", "")


def test_subject_runs_with_the_given_memories():
    subject = statquest_subject([1.0], c0=2.0, h0=1.0)
    trace = subject.run()
    torch.testing.assert_close(trace[0, 0].c[0, 0, 0], torch.tensor(2.947567, dtype=torch.float64),
                               atol=1e-6, rtol=0)  # fmt: skip


@pytest.mark.parametrize("sequence", ["1000", "1000,1010"])
def test_retention_and_report_of_a_saved_model_on_one_or_two_steps(
    tmp_path: Path, models_folder: Path, sequence: str
):
    wave = str(models_folder / "wave")
    out = tmp_path / "retention.png"
    assert main(["figure", "retention", "--model", wave, "--sequence", sequence,
                 "--out", str(out)]) == 0  # fmt: skip
    assert out.stat().st_size > 10_000
    report = tmp_path / "report.html"
    assert main(["report", "--model", wave, "--sequence", sequence, "--out", str(report)]) == 0
    assert "Retention" in report.read_text()


@pytest.mark.parametrize("chars", ["t", "to"])
def test_report_and_retention_of_a_text_model_on_one_or_two_characters(
    tmp_path: Path, models_folder: Path, chars: str
):
    text = tmp_path / "short.txt"
    text.write_text(chars)
    words = str(models_folder / "words")
    report = tmp_path / "report.html"
    assert main(["report", "--model", words, "--text", str(text), "--out", str(report)]) == 0
    assert f"Text ({len(chars)} character" in report.read_text()
    out = tmp_path / "retention.png"
    assert main(["figure", "retention", "--model", words, "--text", str(text),
                 "--out", str(out)]) == 0  # fmt: skip
    assert out.stat().st_size > 10_000
