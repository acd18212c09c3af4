"""Metric records to `metrics.jsonl` (one JSON object per event) and TensorBoard `tb/`."""

import json
from pathlib import Path


class MetricWriter:
    """Appends records; with `enabled=False` (processes other than 0 of a multi-host run) every
    method does nothing, so one process writes each record once."""

    def __init__(self, workdir, enabled: bool = True):
        self.workdir = Path(workdir)
        self.enabled = enabled
        if not enabled:
            return
        self.file = open(self.workdir / "metrics.jsonl", "a")  # noqa: SIM115 (closed in close())
        try:
            from tensorboardX import SummaryWriter

            self.tb = SummaryWriter(str(self.workdir / "tb"))
        except ImportError:  # TensorBoard events are optional; metrics.jsonl is the contract
            self.tb = None

    def write(self, step: int, split: str, values: dict) -> None:
        if not self.enabled:
            return
        self.file.write(json.dumps({"step": int(step), "split": split, **values}) + "\n")
        self.file.flush()
        if self.tb is not None:
            for name, value in values.items():
                if isinstance(value, int | float) and not isinstance(value, bool):
                    self.tb.add_scalar(f"{split}/{name}", value, step)

    def drop_after(self, step: int) -> None:
        """Forget records past `step` (a resumed run logs those steps again)."""
        if not self.enabled:
            return
        self.file.close()
        path = self.workdir / "metrics.jsonl"
        kept = [r for r in read_metrics(self.workdir) if r["step"] <= step]
        path.write_text("".join(json.dumps(r) + "\n" for r in kept))
        self.file = open(path, "a")  # noqa: SIM115 (closed in close())

    def close(self) -> None:
        if not self.enabled:
            return
        self.file.close()
        if self.tb is not None:
            self.tb.close()


def read_metrics(workdir) -> list[dict]:
    """The records of `<workdir>/metrics.jsonl`, in order."""
    with open(Path(workdir) / "metrics.jsonl") as f:
        return [json.loads(line) for line in f if line.strip()]
