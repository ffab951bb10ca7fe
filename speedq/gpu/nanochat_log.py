"""The lines nanochat's scripts/base_train.py prints (rank 0), and what speedq reads from them.

    Total number of training tokens: 10,240
    Total training FLOPs estimate: 3.221520e+10
    step 00000/00020 (0.00%) | loss: 8.317766 | lrm: 0.03 | dt: 3012.55ms | tok/sec: 2,168 | bf16_mfu: 0.00 | ...
    step 00011/00020 (55.00%) | loss: 7.1 | ... | total time: 0.01m | eta: 0.0m
    Step 00010 | Validation bpb: 2.384955
    Step 02000 | CORE metric: 0.2234
    Total training time: 0.02m
    Minimum validation bpb: 2.223446

Step numbers are 0-based: `step 00005/00020` is printed once the sixth step (index 5) is done,
so speedq counts it as 6 steps done of 20. `| eta:` appears only after step 10. A checkpoint of
step S holds S steps done; resuming from it prints `step S` first. nanochat times only the steps
after index 10 (`if step > 10`: compilation and warm-up come first); speedq's mean tok/sec and
MFU take the same steps.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

STEP_RE = re.compile(
    r"^step (?P<step>\d+)/(?P<total>\d+) \([\d.]+%\) \| loss: (?P<loss>\S+) \|.*?(?:\| eta: (?P<eta>[\d.]+)m)?\s*$"
)
STAGE = "base_train"  # the stage that prints these lines (chat_sft prints a `Validation bpb` of its own)
RATE_RE = re.compile(r"\| tok/sec: (?P<tps>[\d,]+) \| bf16_mfu: (?P<mfu>[\d.]+) \|")
WARMUP_STEPS = 10  # step indexes up to this one are not timed (base_train's `if step > 10`)
TOKENS_RE = re.compile(r"^Total number of training tokens: (?P<n>[\d,]+)\s*$")
FLOPS_RE = re.compile(r"^Total training FLOPs estimate: (?P<x>[\d.]+e[+-]\d+)\s*$")
VAL_BPB_RE = re.compile(r"^Step (?P<step>\d+) \| Validation bpb: (?P<bpb>[\d.]+|nan|inf)\s*$")
CORE_RE = re.compile(r"^Step (?P<step>\d+) \| CORE metric: (?P<core>[-\d.]+)\s*$")
TRAIN_TIME_RE = re.compile(r"^Total training time: (?P<minutes>[\d.]+)m\s*$")
MIN_BPB_RE = re.compile(r"^Minimum validation bpb: (?P<bpb>[\d.]+|nan|inf)\s*$")
AUTO_BATCH_RE = re.compile(r"^Auto-computed optimal batch size: (?P<tokens>[\d,]+) tokens\s*$")
ITERATIONS_RE = re.compile(r"^(?:Using user-provided|Calculated) number of iterations[^:]*: (?P<n>[\d,]+)\s*$")
BATCH_ASSERT_RE = re.compile(r"AssertionError: total_batch_size \((?P<total>\d+)\) must be a multiple of (?P<unit>\d+)")


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


@dataclass(frozen=True)
class StepLine:
    index: int  # as printed, 0-based
    total: int
    loss: float | None
    eta_s: float | None  # None before step 11
    tokens_per_s: int | None = None
    mfu_pct: float | None = None

    @property
    def done(self) -> int:
        """Steps finished once this line is printed."""
        return self.index + 1


def step_line(line: str) -> StepLine | None:
    match = STEP_RE.match(line)
    if not match:
        return None
    eta = match["eta"]
    rate = RATE_RE.search(line)
    return StepLine(int(match["step"]), int(match["total"]), _number(match["loss"]),
                    round(float(eta) * 60, 1) if eta is not None else None,
                    int(rate["tps"].replace(",", "")) if rate else None, float(rate["mfu"]) if rate else None)


def timed(step: StepLine) -> bool:
    """A step nanochat counts in its training time (and speedq in its means)."""
    return step.index > WARMUP_STEPS and step.tokens_per_s is not None


@dataclass
class Summary:
    """Everything speedq reads from a base_train log, in the order of the lines."""

    steps: list[StepLine]
    val_bpb: list[tuple[int, float | None]]
    core: list[tuple[int, float]]
    total_batch_size: int | None = None  # when auto-computed
    num_iterations: int | None = None
    training_time_s: float | None = None
    min_val_bpb: float | None = None
    batch_assertion: tuple[int, int] | None = None  # (total, multiple) when the assertion failed
    tokens: int | None = None  # `Total number of training tokens`
    total_flops: float | None = None  # `Total training FLOPs estimate`

    @property
    def last_done(self) -> int | None:
        return self.steps[-1].done if self.steps else None

    def means(self) -> tuple[float, float] | None:
        """Mean tok/sec and bf16_mfu of the timed steps, or None before any."""
        timed_steps = [s for s in self.steps if timed(s)]
        if not timed_steps:
            return None
        return (sum(s.tokens_per_s or 0 for s in timed_steps) / len(timed_steps),
                sum(s.mfu_pct or 0.0 for s in timed_steps) / len(timed_steps))


def read(lines: Iterable[str]) -> Summary:
    summary = Summary(steps=[], val_bpb=[], core=[])
    for raw in lines:
        line = raw.rstrip("\r\n")
        if (step := step_line(line)) is not None:
            summary.steps.append(step)
        elif m := VAL_BPB_RE.match(line):
            summary.val_bpb.append((int(m["step"]), _number(m["bpb"])))
        elif m := CORE_RE.match(line):
            summary.core.append((int(m["step"]), float(m["core"])))
        elif m := TRAIN_TIME_RE.match(line):
            summary.training_time_s = round(float(m["minutes"]) * 60, 1)
        elif m := MIN_BPB_RE.match(line):
            summary.min_val_bpb = _number(m["bpb"])
        elif m := TOKENS_RE.match(line):
            summary.tokens = int(m["n"].replace(",", ""))
        elif m := FLOPS_RE.match(line):
            summary.total_flops = float(m["x"])
        elif m := AUTO_BATCH_RE.match(line):
            summary.total_batch_size = int(m["tokens"].replace(",", ""))
        elif m := ITERATIONS_RE.match(line):
            summary.num_iterations = int(m["n"].replace(",", ""))
        elif m := BATCH_ASSERT_RE.search(line):
            summary.batch_assertion = (int(m["total"]), int(m["unit"]))
    return summary
