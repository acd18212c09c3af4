"""Metric records to `metrics.jsonl` (one JSON object per event) and TensorBoard `tb/`."""

import json
from pathlib import Path


class MetricWriter:
    def __init__(self, workdir):
        self.workdir = Path(workdir)
        self.file = open(self.workdir / "metrics.jsonl", "a")  # noqa: SIM115 (closed in close())
        try:
            from tensorboardX import SummaryWriter

            self.tb = SummaryWriter(str(self.workdir / "tb"))
        except ImportError:  # TensorBoard events are optional; metrics.jsonl is the contract
            self.tb = None

    def write(self, step: int, split: str, values: dict) -> None:
        self.file.write(json.dumps({"step": int(step), "split": split, **values}) + "\n")
        self.file.flush()
        if self.tb is not None:
            for name, value in values.items():
                if isinstance(value, int | float) and not isinstance(value, bool):
                    self.tb.add_scalar(f"{split}/{name}", value, step)

    def drop_after(self, step: int) -> None:
        """Forget records past `step` (a resumed run logs those steps again)."""
        self.file.close()
        path = self.workdir / "metrics.jsonl"
        kept = [r for r in read_metrics(self.workdir) if r["step"] <= step]
        path.write_text("".join(json.dumps(r) + "\n" for r in kept))
        self.file = open(path, "a")  # noqa: SIM115 (closed in close())

    def close(self) -> None:
        self.file.close()
        if self.tb is not None:
            self.tb.close()


def read_metrics(workdir) -> list[dict]:
    """The records of `<workdir>/metrics.jsonl`, in order."""
    with open(Path(workdir) / "metrics.jsonl") as f:
        return [json.loads(line) for line in f if line.strip()]
