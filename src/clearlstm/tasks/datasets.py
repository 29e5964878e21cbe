"""The real data that ships inside the package: four series and a public-domain text.

Nothing is downloaded: the files live in ``clearlstm/data/`` beside this module, with their
sources and licences in ``data/SOURCES.md``. ``--dataset NAME`` on the command line uses one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

DATA_DIR = Path(__file__).resolve().parent / "data"


@dataclass(frozen=True)
class Dataset:
    """One bundled file and what to do with it."""

    name: str
    kind: Literal["series", "text"]
    file: str
    description: str
    source: str
    licence: str
    target: str | None = None  # the column to forecast (series only)
    time_column: str | None = None

    @property
    def path(self) -> Path:
        return DATA_DIR / self.file

    def length(self) -> int:
        """Rows of a series (without the header) or characters of a text."""
        text = self.path.read_text(encoding="utf-8")
        return len(text.splitlines()) - 1 if self.kind == "series" else len(text)


DATASETS: dict[str, Dataset] = {
    d.name: d
    for d in [
        Dataset(
            "co2",
            "series",
            "co2.csv",
            "Mauna Loa atmospheric CO2, monthly mean, ppm, 1958-2001",
            "Keeling & Whorf, Scripps / CDIAC (via statsmodels)",
            "public domain",
            target="co2_ppm",
            time_column="month",
        ),
        Dataset(
            "sunspots",
            "series",
            "sunspots.csv",
            "yearly mean sunspot number, 1700-2008",
            "NOAA National Geophysical Data Center (via statsmodels)",
            "public domain",
            target="sunspots",
            time_column="year",
        ),
        Dataset(
            "nile",
            "series",
            "nile.csv",
            "annual flow of the Nile at Aswan, 1871-1970",
            "Cobb (1978), Biometrika (via statsmodels)",
            "public domain",
            target="flow",
            time_column="year",
        ),
        Dataset(
            "elnino",
            "series",
            "elnino.csv",
            "Pacific sea surface temperature, Nino 1+2, monthly, °C, 1950-2010",
            "NOAA Climate Prediction Center, ERSST.V3B (via statsmodels)",
            "public domain",
            target="sea_surface_temp_c",
            time_column="month",
        ),
        Dataset(
            "shakespeare",
            "text",
            "shakespeare.txt",
            "nine plays by Shakespeare (Hamlet, Macbeth, King Lear, ...)",
            "Project Gutenberg, via the Open Shakespeare package",
            "public domain (collection CC BY 2.5, Open Knowledge Foundation)",
        ),
    ]
}

DEFAULT_SERIES = "co2"


def get_dataset(name: str) -> Dataset:
    """The bundled dataset called ``name``; a clear error lists the names there are."""
    if name not in DATASETS:
        raise ValueError(
            f"no bundled dataset named {name!r}; there are: {', '.join(DATASETS)} "
            "(`clearlstm datasets` lists them)"
        )
    return DATASETS[name]
