"""Write the README's synthetic example series: ``sales.csv``, ``recent.csv``, ``stores.csv``
and ``plan.csv``.

Daily unit sales of one made-up product with its price as a covariate: a slow trend, a
weekly pattern (busier at weekends), a yearly swell, promotions that cut the price and lift
sales, and noise from Python's seeded ``random`` (the same numbers on every machine). The
numbers are invented, not measured. ``recent.csv`` holds the 56 days after ``sales.csv``.
``stores.csv`` is long-format: daily sales of eight made-up stores (``store,date,sales``),
sharing the weekly pattern at different levels, each with its own slow trend and noise.
``plan.csv`` is ``sales.csv`` and the next 14 days' planned prices, their sales unknown (empty
``units`` cells), for a model that reads the price as a future covariate. Run
``python examples/make_examples.py`` to rewrite the files; a test checks they match.
"""

from __future__ import annotations

import datetime as dt
import math
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
START = dt.date(2023, 1, 1)
DAYS, RECENT_DAYS, PLANNED_DAYS = 400, 56, 14
WEEKLY = (0.92, 0.95, 0.97, 1.0, 1.08, 1.22, 1.16)  # Monday .. Sunday
HEADER = "date,units,price"
# Store -> its typical daily sales: one weekly pattern at eight levels.
STORES = {"S1": 40, "S2": 65, "S3": 90, "S4": 120, "S5": 150, "S6": 210, "S7": 260, "S8": 330}
STORE_DAYS = 140


def rows(days: int) -> list[str]:
    """``days`` CSV rows from START, one per day: date, units sold, price."""
    rng = random.Random(0)
    out = []
    for t in range(days):
        day = START + dt.timedelta(days=t)
        promo = (t // 7) % 6 == 5  # every sixth week
        price = 7.49 if promo else 9.99 + 0.5 * (t >= 250)
        base = (100 + 0.04 * t) * (1 + 0.12 * math.sin(2 * math.pi * t / 365.25))
        lift = 1 + 0.09 * (9.99 - price)
        noise = sum(rng.random() for _ in range(4)) - 2.0  # -2 .. 2, bell-shaped
        units = max(0, round(base * WEEKLY[day.weekday()] * lift + 6 * noise))
        out.append(f"{day.isoformat()},{units},{price:.2f}")
    return out


def store_rows() -> list[str]:
    """``store,date,sales`` rows: STORE_DAYS days from START for each store, store by store."""
    rng = random.Random(1)
    out = []
    for store, level in STORES.items():
        growth = rng.uniform(-0.0005, 0.002)  # per day
        for t in range(STORE_DAYS):
            day = START + dt.timedelta(days=t)
            noise = sum(rng.random() for _ in range(4)) - 2.0  # -2 .. 2, bell-shaped
            sales = level * (1 + growth * t) * WEEKLY[day.weekday()] + 0.08 * level * noise
            out.append(f"{store},{day.isoformat()},{max(0, round(sales))}")
    return out


def files() -> dict[str, str]:
    """File name -> text of each example series."""
    every = rows(DAYS + RECENT_DAYS)
    later = (row.split(",") for row in every[DAYS : DAYS + PLANNED_DAYS])
    planned = [f"{day},,{price}" for day, _, price in later]  # sales unknown: empty units
    return {
        "sales.csv": "\n".join([HEADER, *every[:DAYS]]) + "\n",
        "recent.csv": "\n".join([HEADER, *every[DAYS:]]) + "\n",
        "stores.csv": "\n".join(["store,date,sales", *store_rows()]) + "\n",
        "plan.csv": "\n".join([HEADER, *every[:DAYS], *planned]) + "\n",
    }


if __name__ == "__main__":
    for name, text in files().items():
        (HERE / name).write_text(text)
