"""Library callers of the training loop get the checks the command line's flags make: a
setting that would make training fail or silently learn nothing (clip 0 zeroes every
gradient, a negative clip reverses them, patience 0 runs no epoch, a NaN learning rate) is a
UsageError naming the setting, its flag, the accepted range and the value."""

from __future__ import annotations

import math
import re
from dataclasses import replace

import pytest
import torch

from clearlstm.errors import UsageError
from clearlstm.tasks.models import Forecaster
from clearlstm.train.distributed import Distributed
from clearlstm.train.loop import TrainConfig, check_config, fit

POSITIVE = "a finite number greater than 0"
CASES = [
    ({"clip": 0.0}, f"TrainConfig.clip (--clip) must be {POSITIVE}; got 0.0"),
    ({"clip": -1.0}, f"TrainConfig.clip (--clip) must be {POSITIVE}; got -1.0"),
    ({"clip": math.inf}, f"TrainConfig.clip (--clip) must be {POSITIVE}; got inf"),
    ({"patience": 0}, "TrainConfig.patience (--patience) must be an integer of at least 1; got 0"),
    ({"lr": math.nan}, f"TrainConfig.lr (--lr) must be {POSITIVE}; got nan"),
    ({"lr": math.inf}, f"TrainConfig.lr (--lr) must be {POSITIVE}; got inf"),
    ({"lr": 0.0}, f"TrainConfig.lr (--lr) must be {POSITIVE}; got 0.0"),
    ({"lr": "0.1"}, f"TrainConfig.lr (--lr) must be {POSITIVE}; got '0.1'"),
    ({"epochs": 0}, "TrainConfig.epochs (--epochs) must be an integer of at least 1; got 0"),
    ({"epochs": True}, "TrainConfig.epochs (--epochs) must be an integer of at least 1; got True"),
    ({"batch_size": 2.5}, "TrainConfig.batch_size (--batch-size) must be an integer of at least"),
    ({"seed": 1.5}, "TrainConfig.seed (--seed) must be an integer; got 1.5"),
    ({"final_lr_fraction": math.nan}, "TrainConfig.final_lr_fraction must be a number from 0"),
]


@pytest.mark.parametrize(("change", "message"), CASES, ids=[str(c[0]) for c in CASES])
def test_a_setting_that_cannot_train_is_refused_by_name(change, message):
    with pytest.raises(UsageError, match=re.escape(message)):
        check_config(replace(TrainConfig(), **change), Distributed())


def test_the_defaults_and_the_smallest_useful_settings_are_accepted():
    check_config(TrainConfig(), Distributed())
    check_config(TrainConfig(epochs=1, batch_size=1, patience=1, clip=1e-9), Distributed())


def test_fit_refuses_before_it_trains_or_writes(tmp_path):
    model = Forecaster(1, 1, 1, 4, 1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    data = (torch.zeros(8, 4, 1), torch.zeros(8, 1, 1))
    for change in ({"clip": 0.0}, {"patience": 0}, {"lr": math.nan}):
        config = replace(TrainConfig(epochs=2), **change)
        with pytest.raises(UsageError, match=f"TrainConfig.{next(iter(change))} "):
            fit(model, data, data, lambda m, x, y: m(x).sum((1, 2)), config, tmp_path, {})
    assert list(tmp_path.iterdir()) == []
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_stop_after_ends_a_run_without_validation_after_that_many_epochs(tmp_path):
    """A refit on all rows trains the validation-chosen number of epochs (``stop_after``) on
    the full run's schedule, and ends normally (the test hook CLEARLSTM_STOP_AFTER_EPOCH is
    another thing: a simulated kill)."""
    model = Forecaster(1, 1, 1, 4, 1)
    gen = torch.Generator().manual_seed(0)
    data = (torch.randn(16, 4, 1, generator=gen), torch.randn(16, 1, 1, generator=gen))
    config = TrainConfig(epochs=10, batch_size=8)
    loss = lambda m, x, y: (m(x) - y).square().mean((1, 2))  # noqa: E731
    result = fit(model, data, None, loss, config, tmp_path, {}, stop_after=3)
    assert result.epochs_run == 3 and [h["epoch"] for h in result.history] == [1, 2, 3]
