"""Loggers of a run: ``loggers = [csv, tensorboard]`` in the train section, or ``--logger``.

Every logger receives the same events, each at the run's global step (optimizer
steps so far):

* per optimizer step: ``train/loss_step`` (and each auxiliary loss, ``train/aux:..._step``)
  and ``lr_step``;
* per epoch: ``train/loss`` (the epoch's mean), ``val/loss`` and ``val/<metric>``, ``lr``, ``time``;
* once at the end: ``test/loss`` and ``test/<metric>`` on the weights the validation split chose.

``csv`` appends ``epoch,step,key,value`` rows to ``metrics.csv`` in the run
directory (``pandas.read_csv`` reads it; ``pivot`` makes a table per epoch);
``tensorboard`` writes event files under ``tensorboard/`` (``tensorboard
--logdir RUN``). On ``--resume`` both drop what was logged after the
checkpoint they continue from. Only rank 0 logs.
"""

from __future__ import annotations

import csv
import os
from typing import Any

from dsl.language.files import atomic_text

CSV_FILE = "metrics.csv"
TB_FOLDER = "tensorboard"
CSV_COLUMNS = ("epoch", "step", "key", "value")


class CsvLogger:
    def __init__(self, folder: str, resume_epoch: int):
        self.path = os.path.join(folder, CSV_FILE)
        if resume_epoch > 0 and os.path.exists(self.path):
            self._truncate(resume_epoch)
        elif resume_epoch == 0 or not os.path.exists(self.path):
            atomic_text(self.path, ",".join(CSV_COLUMNS) + "\n")
        self.fh = open(self.path, "a", newline="", encoding="utf-8")  # noqa: SIM115 - open for the whole run
        self.writer = csv.writer(self.fh)

    def _truncate(self, epoch: int) -> None:
        with open(self.path, newline="", encoding="utf-8") as fh:
            rows = [r for r in csv.reader(fh)]
        # the test split of a run that ended before is stale once it goes on
        kept = [rows[0]] + [r for r in rows[1:] if len(r) == 4 and _int(r[0]) <= epoch
                            and not r[2].startswith("test/")]
        atomic_text(self.path, "".join(",".join(r) + "\n" for r in kept))

    def log(self, values: dict[str, float], epoch: int, step: int) -> None:
        for key, value in values.items():
            self.writer.writerow((epoch, step, key, repr(float(value))))

    def flush(self) -> None:
        self.fh.flush()

    def close(self) -> None:
        self.fh.close()


class TensorBoardLogger:
    def __init__(self, folder: str, resume_step: int):
        from torch.utils.tensorboard import SummaryWriter

        # purge_step drops the events a killed run wrote after the checkpoint it resumes from
        self.writer = SummaryWriter(os.path.join(folder, TB_FOLDER), purge_step=resume_step + 1 if resume_step else None)

    def log(self, values: dict[str, float], epoch: int, step: int) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, float(value), global_step=step)

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        return 0


class Loggers:
    """The run's loggers, as one."""

    def __init__(self, names: list[str], folder: str | None, resume_epoch: int = 0, resume_step: int = 0):
        self.loggers: list[Any] = []
        if folder is None:
            return
        os.makedirs(folder, exist_ok=True)
        for name in names:
            if name == "csv":
                self.loggers.append(CsvLogger(folder, resume_epoch))
            elif name == "tensorboard":
                self.loggers.append(TensorBoardLogger(folder, resume_step))

    @property
    def active(self) -> bool:
        return bool(self.loggers)

    def step(self, terms: dict[str, float], lr: float, epoch: int, step: int) -> None:
        values = {f"train/{k}_step": v for k, v in terms.items()}
        values["lr_step"] = lr
        for lg in self.loggers:
            lg.log(values, epoch, step)

    def epoch(self, record: dict[str, Any], step: int) -> None:
        values = {f"{split}/{k}": v for split in ("train", "val", "test", "graph")
                  for k, v in (record.get(split) or {}).items()}
        values.update({k: record[k] for k in ("lr", "time") if k in record})
        for lg in self.loggers:
            lg.log(values, int(record.get("epoch", 0)), step)
            lg.flush()

    def close(self) -> None:
        for lg in self.loggers:
            lg.close()
