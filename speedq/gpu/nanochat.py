"""What speedq knows of nanochat (karpathy/nanochat at KNOWN_GOOD_COMMIT): the one place for it.

Standard library only, so `speedq.schemas` can validate a spec against nanochat's rules without
torch. Everything here is read from nanochat's code (scripts/base_train.py, nanochat/gpt.py,
nanochat/dataset.py, runs/speedrun.sh); tests check it against numbers recorded from running that
code (tests/data/nanochat/). Log-line parsing lives in `speedq.gpu.nanochat_log`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import lru_cache

KNOWN_GOOD_COMMIT = "92d63d4e8bb4df75c3b71618f31ddde2378b2bcd"  # master on 2026-03, tried on a CPU
# dev/LEADERBOARD.md: a run counts for time-to-GPT-2 when its CORE metric beats GPT-2's, trained
# on one node of this many of this GPU.
GPT2_CORE = 0.256525
LEADERBOARD_GPU = ("H100", 8)

# ---------------------------------------------------------------------------------------------
# Files under NANOCHAT_BASE_DIR

SHARDS_DIR = "base_data_climbmix"
TOKENIZER_DIR = "tokenizer"
TOKENIZER_FILES = ("tokenizer.pkl", "token_bytes.pt")
VAL_SHARD = 6542  # nanochat.dataset always downloads it; the last parquet file is the val split


def shard_name(index: int) -> str:
    return f"shard_{index:05d}.parquet"


# ---------------------------------------------------------------------------------------------
# scripts/base_train.py's options (its argparse), with the values speedq lets a job set

INT, FLOAT, STR, FLAG = "int", "float", "str", "flag"


@dataclass(frozen=True)
class Option:
    kind: str  # INT, FLOAT, STR or FLAG (store_true)
    default: int | float | bool | str | None
    minimum: float | None = None  # smallest value allowed; -1 is also allowed when `off` is set
    off: bool = False  # -1 means "disabled" / "auto" for this option
    pattern: str | None = None  # a str option's values (fullmatch)


BASE_TRAIN_OPTIONS: dict[str, Option] = {
    "run": Option(STR, "dummy"),
    "device-type": Option(STR, "", pattern=r"cuda|cpu|mps"),
    "fp8": Option(FLAG, False),
    "fp8-recipe": Option(STR, "tensorwise", pattern=r"rowwise|tensorwise"),
    "depth": Option(INT, 20, minimum=1),
    "aspect-ratio": Option(INT, 64, minimum=1),
    "head-dim": Option(INT, 128, minimum=1),
    "max-seq-len": Option(INT, 2048, minimum=1),
    "window-pattern": Option(STR, "SSSL", pattern=r"[SL]{1,64}"),
    "num-iterations": Option(INT, -1, minimum=1, off=True),
    "target-flops": Option(FLOAT, -1.0, minimum=1.0, off=True),
    "target-param-data-ratio": Option(FLOAT, 12.0, minimum=0.0, off=True),
    "device-batch-size": Option(INT, 32, minimum=1),
    "total-batch-size": Option(INT, -1, minimum=1, off=True),
    "embedding-lr": Option(FLOAT, 0.3, minimum=0.0),
    "unembedding-lr": Option(FLOAT, 0.008, minimum=0.0),
    "weight-decay": Option(FLOAT, 0.28, minimum=0.0),
    "matrix-lr": Option(FLOAT, 0.02, minimum=0.0),
    "scalar-lr": Option(FLOAT, 0.5, minimum=0.0),
    "warmup-steps": Option(INT, 40, minimum=0),
    "warmdown-ratio": Option(FLOAT, 0.65, minimum=0.0),
    "final-lr-frac": Option(FLOAT, 0.05, minimum=0.0),
    "resume-from-step": Option(INT, -1, minimum=0, off=True),
    "eval-every": Option(INT, 250, minimum=1, off=True),
    "eval-tokens": Option(INT, 80 * 524288, minimum=1),
    "core-metric-every": Option(INT, 2000, minimum=1, off=True),
    "core-metric-max-per-task": Option(INT, 500, minimum=1, off=True),
    "sample-every": Option(INT, 2000, minimum=1, off=True),
    "save-every": Option(INT, -1, minimum=1, off=True),
    "model-tag": Option(STR, None),
}
# speedq sets these itself: the checkpoint dir, resume point, save interval and wandb run name.
RESERVED_TRAIN_ARGS = ("depth", "resume-from-step", "save-every", "run", "model-tag")
RESERVED_IN_SMOKE = ("num-iterations",)  # a smoke test is its fixed few steps

TrainArgs = dict[str, "int | float | bool | str"]
INT_DIGITS = 15  # a whole-number option's most digits, typed or sent as a JSON number alike
# The most a submitted job may train on: 10^27 FLOPs is some 8,000 years of one 8xH100 node at
# the estimate's MFU, 10^15 tokens about 170,000 GPT-2 speedruns. Past them is a typo, not a
# speedrun. Checked on new input only (check_horizon), never on a record read back.
MAX_TRAIN_FLOPS = 10**27
MAX_TRAIN_TOKENS = 10**15


def train_arg(name: str, value: object, mode: str, bounded: bool = True) -> int | float | bool | str:
    """One base_train option, typed; ValueError with the rule in words. `bounded`: new input, held
    to INT_DIGITS (a record read back is not, so one stored before that rule stays readable)."""
    option = BASE_TRAIN_OPTIONS.get(name)
    if option is None:
        raise ValueError(f"{name!r} is not a base_train option (known: {', '.join(sorted(BASE_TRAIN_OPTIONS))})")
    if name in RESERVED_TRAIN_ARGS or (mode == "smoke" and name in RESERVED_IN_SMOKE):
        where = " in a smoke job" if name in RESERVED_IN_SMOKE else ""
        raise ValueError(f"{name} is set by speedq and cannot be given{where}")
    typed = _typed(option, value, bounded)
    if isinstance(typed, (int, float)) and not isinstance(typed, bool) and option.minimum is not None:
        if typed < option.minimum and not (option.off and typed == -1):
            least = f"{option.minimum:g}" + (" (or -1)" if option.off else "")
            raise ValueError(f"{name} must be at least {least}, not {typed}")
    return typed


def _typed(option: Option, value: object, bounded: bool = True) -> int | float | bool | str:
    text = value.strip() if isinstance(value, str) else None
    if option.kind == FLAG:
        if isinstance(value, bool):
            return value
        if text is not None and text.lower() in ("true", "1", "yes", "false", "0", "no"):
            return text.lower() in ("true", "1", "yes")
        raise ValueError("is a flag: give it bare, or true/false")
    if option.kind == INT:
        if isinstance(value, int) and not isinstance(value, bool):
            whole = value
        elif text is not None and re.fullmatch(r"[-+]?\d+", text):
            digits = text.lstrip("+-").lstrip("0") or "0"
            if bounded and len(digits) > INT_DIGITS:
                raise ValueError(f"must be a whole number of at most {INT_DIGITS} digits")
            whole = int(digits) * (-1 if text.startswith("-") else 1)
        else:
            raise ValueError("must be a whole number")
        if bounded and abs(whole) >= 10**INT_DIGITS:
            raise ValueError(f"must be a whole number of at most {INT_DIGITS} digits")
        return whole
    if option.kind == FLOAT:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                number = float(value)
            except OverflowError:  # an int past any float
                number = math.inf
        elif text is not None and re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?", text):
            number = float(text)
        else:
            raise ValueError("must be a number")
        if not math.isfinite(number):
            raise ValueError("must be a finite number")
        return number
    if not isinstance(value, str) or option.pattern is None or not re.fullmatch(option.pattern, value):
        raise ValueError(f"must match {option.pattern}")
    return value


def argv_of(args: TrainArgs) -> list[str]:
    """base_train's argv for typed options: `--key=value`, a true flag bare, a false one left out."""
    argv = []
    for name, value in args.items():
        if value is True:
            argv.append(f"--{name}")
        elif value is not False:
            argv.append(f"--{name}={value}")
    return argv


# ---------------------------------------------------------------------------------------------
# Sizing: base_train.py's own arithmetic, closed form of the meta-device model it builds

VOCAB_SIZE = 32768  # scripts/tok_train.py's default, special tokens included
PAD_VOCAB_TO = 64  # GPT(pad_vocab_size_to=64)
VE_GATE_CHANNELS = 12  # CausalSelfAttention.ve_gate_channels
REF_DEPTH = 12  # base_train tunes at d12 and transfers (D_REF)
B_REF = 2**19  # base_train's optimal batch at d12
BATCH_EXPONENT = 0.383  # Power Lines: B_opt ~ D^0.383
PARAM_DATA_RATIO = 8  # runs/speedrun.sh's --target-param-data-ratio
SMOKE_STEPS = 10  # a smoke job's --num-iterations
# base_train's evaluations during training (val bpb, CORE, samples), all off: a short run's figures
# would mean nothing and the CORE eval alone takes minutes.
EVALS_OFF: dict[str, int] = {"eval-every": -1, "core-metric-every": -1, "sample-every": -1}
# Per-GPU micro batch at a 2048 context that fits in memory (speedrun.sh: 16 on 80 GB cards).
DEVICE_BATCH_SIZE = {
    "H100": 16, "H200": 16, "B200": 16, "A100-80GB": 16, "A100-40GB": 8, "L40S": 8, "A10G": 4, "CPU": 4,
}
FP8_GPUS = ("H100", "H200", "B200")


def model_dim(depth: int, aspect_ratio: int = 64, head_dim: int = 128) -> int:
    """build_model_meta: depth * aspect ratio, nudged up to a multiple of the head dim."""
    return ((depth * aspect_ratio + head_dim - 1) // head_dim) * head_dim


def scaling_params(depth: int, aspect_ratio: int = 64, head_dim: int = 128, vocab_size: int = VOCAB_SIZE) -> int:
    """get_scaling_params: transformer blocks plus lm_head, as GPT.num_scaling_params counts them.

    A block holds q, k, v, proj (4 d^2) and the MLP (8 d^2); the layers with a value embedding
    (every other one, the last always) add a 12 x heads gate.
    """
    dim = model_dim(depth, aspect_ratio, head_dim)
    heads = dim // head_dim
    padded_vocab = ((vocab_size + PAD_VOCAB_TO - 1) // PAD_VOCAB_TO) * PAD_VOCAB_TO
    ve_layers = (depth + 1) // 2
    return depth * 12 * dim * dim + ve_layers * VE_GATE_CHANNELS * heads + padded_vocab * dim


@lru_cache(maxsize=256)  # pure, and asked for at every submit's estimate
def flops_per_token(depth: int, aspect_ratio: int = 64, head_dim: int = 128, max_seq_len: int = 2048,
                    window_pattern: str = "SSSL", vocab_size: int = VOCAB_SIZE) -> int:
    """GPT.estimate_flops: 6 x matmul params (+ the smear gate's 24) plus attention per layer window;
    a short window is a quarter context rounded up to 128, the last layer always sees it all."""
    dim = model_dim(depth, aspect_ratio, head_dim)
    heads = dim // head_dim
    short = -(-max_seq_len // 4 // 128) * 128
    pattern = window_pattern.upper()
    windows = [max_seq_len if pattern[i % len(pattern)] == "L" else short for i in range(depth)]
    windows[-1] = max_seq_len
    matmul = scaling_params(depth, aspect_ratio, head_dim, vocab_size) + 24
    return 6 * matmul + sum(12 * heads * head_dim * min(w, max_seq_len) for w in windows)


@dataclass(frozen=True)
class Sizing:
    """What base_train will compute for a job, and the device batch speedq passes it."""

    total_batch_size: int  # tokens per optimizer step
    device_batch_size: int
    max_seq_len: int
    world_size: int
    num_iterations: int  # target-flops too is known in advance: base_train rounds it to steps

    @property
    def train_tokens(self) -> int:
        return self.num_iterations * self.total_batch_size


def _number(args: TrainArgs, name: str) -> float:
    """A numeric option's value: the job's, else base_train's default (schemas checked its kind)."""
    value = args.get(name, BASE_TRAIN_OPTIONS[name].default)
    if not isinstance(value, (int, float)):
        raise SizingError(f"train arg {name} must be a number, not {value!r}")
    return value


def _int(args: TrainArgs, name: str) -> int:
    return int(_number(args, name))


def _str(args: TrainArgs, name: str) -> str:
    return str(args.get(name, BASE_TRAIN_OPTIONS[name].default))


def auto_total_batch_size(depth: int, ratio: float, aspect_ratio: int = 64, head_dim: int = 128,
                          vocab_size: int = VOCAB_SIZE) -> int:
    """base_train with --total-batch-size=-1: grows as D^0.383 from 2^19 at d12, a power of two."""
    target_tokens = int(ratio * scaling_params(depth, aspect_ratio, head_dim, vocab_size))
    d_ref = ratio * scaling_params(REF_DEPTH, aspect_ratio, head_dim, vocab_size)
    batch_size_ratio = target_tokens / d_ref
    predicted_batch_size = B_REF * batch_size_ratio**BATCH_EXPONENT
    return int(2.0 ** round(math.log2(predicted_batch_size)))


def batch_rule(total_batch_size: int, device_batch_size: int, max_seq_len: int, world_size: int) -> bool:
    """base_train's assertion: the total batch is whole micro-batches of every rank."""
    return total_batch_size % (device_batch_size * max_seq_len * world_size) == 0


class SizingError(ValueError):
    """A spec nanochat would refuse on every attempt (its batch assertion)."""


def size_run(depth: int, mode: str, gpu_type: str, world_size: int, args: TrainArgs | None = None,
             vocab_size: int = VOCAB_SIZE) -> Sizing:
    """Batch, device batch and step count for a job; SizingError naming the rule when none works.

    The device batch is the one given, else the GPU type's default halved until the rule holds.
    Remembered by its inputs (it is pure): a spec is sized when it is validated, again whenever a
    record holding it is read or built, and for its estimate at submit.
    """
    try:
        return _size_run(depth, mode, gpu_type, world_size, args_key(args), vocab_size)
    except SizingError:
        raise
    except (ArithmeticError, ValueError) as exc:  # base_train's arithmetic on extreme values (log2(0), overflow)
        raise SizingError(f"base_train cannot size a run from these train args ({exc})") from None


# Train args as a key for remembering a pure function of them (functools.lru_cache). Each value's
# type is in it: True, 1 and 1.0 are equal keys but not the same train arg.
ArgsKey = tuple[tuple[str, str, "int | float | bool | str"], ...]


def args_key(args: TrainArgs | None) -> ArgsKey:
    return tuple(sorted((name, type(value).__name__, value) for name, value in (args or {}).items()))


def args_of(key: ArgsKey) -> TrainArgs:
    return {name: value for name, _, value in key}


@lru_cache(maxsize=1024)
def _size_run(depth: int, mode: str, gpu_type: str, world_size: int, key: ArgsKey, vocab_size: int) -> Sizing:
    args = args_of(key)
    aspect, head = _int(args, "aspect-ratio"), _int(args, "head-dim")
    seq = _int(args, "max-seq-len")
    ratio = float(args.get("target-param-data-ratio", PARAM_DATA_RATIO))
    horizon = _int(args, "num-iterations") > 0 or _number(args, "target-flops") > 0
    if mode == "full" and not horizon and ratio <= 0:
        raise SizingError(
            "base_train needs a horizon: num-iterations, target-flops or a positive target-param-data-ratio")
    total = _int(args, "total-batch-size")
    if total == -1:
        if ratio == 0:  # base_train divides by its d12 horizon, ratio x params
            raise SizingError(
                "target-param-data-ratio 0 with an auto total-batch-size (-1) divides by zero in base_train")
        total = auto_total_batch_size(depth, ratio, aspect, head, vocab_size)
    given = args.get("device-batch-size")
    if given is not None:
        candidates = [_int(args, "device-batch-size")]
    else:
        candidates = _halvings(DEVICE_BATCH_SIZE.get(gpu_type, 8))
    device = next((b for b in candidates if batch_rule(total, b, seq, world_size)), None)
    if device is None:
        tried = (f"device-batch-size {candidates[0]}" if given is not None
                 else f"any device-batch-size from {candidates[0]} down to 1")
        raise SizingError(
            f"nanochat requires total-batch-size ({total}) to be a multiple of device-batch-size x max-seq-len "
            f"({seq}) x GPU count ({world_size}), and {tried} fails that; use a power-of-two GPU count or set "
            f"train args total-batch-size, device-batch-size or max-seq-len to fit"
        )
    return Sizing(total, device, seq, world_size, _iterations(depth, mode, args, total, ratio, vocab_size))


def check_horizon(depth: int, sizing: Sizing, args: TrainArgs, vocab_size: int = VOCAB_SIZE) -> None:
    """SizingError if a submitted job trains past MAX_TRAIN_TOKENS or MAX_TRAIN_FLOPS."""
    tokens = sizing.train_tokens
    flops = tokens * flops_per_token(depth, _int(args, "aspect-ratio"), _int(args, "head-dim"), sizing.max_seq_len,
                                     _str(args, "window-pattern"), vocab_size)
    if tokens > MAX_TRAIN_TOKENS or flops > MAX_TRAIN_FLOPS:
        raise SizingError(
            f"these train args ask for more than speedq runs as one job: at most {MAX_TRAIN_TOKENS:.0e} training "
            f"tokens and {MAX_TRAIN_FLOPS:.0e} FLOPs")


def short_run_args(steps: int) -> TrainArgs:
    """base_train's options for a run of `steps` steps with its evaluations off (smoke, preflight)."""
    return {"num-iterations": steps, **EVALS_OFF}


def _halvings(start: int) -> list[int]:
    sizes = [start]
    while sizes[-1] > 1:
        sizes.append(sizes[-1] // 2)
    return sizes


def _iterations(depth: int, mode: str, args: TrainArgs, total: int, ratio: float, vocab_size: int) -> int:
    """base_train's horizon, in its order: num-iterations, target-flops, data:param ratio."""
    if mode == "smoke":
        return SMOKE_STEPS
    given = _int(args, "num-iterations")
    if given > 0:
        return given
    aspect, head = _int(args, "aspect-ratio"), _int(args, "head-dim")
    flops = _number(args, "target-flops")
    if flops > 0:
        per_token = flops_per_token(depth, aspect, head, _int(args, "max-seq-len"),
                                    _str(args, "window-pattern"), vocab_size)
        return round(flops / (per_token * total))
    return int(ratio * scaling_params(depth, aspect, head, vocab_size)) // total


def default_save_every(total_steps: int) -> int:
    """One fault then loses at most 2% of the run's steps."""
    return max(1, round(total_steps / 50))


# ---------------------------------------------------------------------------------------------
# Shards (runs/speedrun.sh): "approximately 150 shards are needed for GPT-2 capability
# pretraining [its d24 at ratio 8], add 20 for padding"; tok_train reads 2B characters, 8 shards.

GPT2_SHARDS, PAD_SHARDS, MIN_SHARDS = 150, 20, 8
GPT2_TOKENS = (int(PARAM_DATA_RATIO * scaling_params(24)) // auto_total_batch_size(24, PARAM_DATA_RATIO)) \
    * auto_total_batch_size(24, PARAM_DATA_RATIO)
TOKENS_PER_SHARD = GPT2_TOKENS / GPT2_SHARDS  # training tokens one shard feeds (after packing)


def shards_needed(sizing: Sizing | None, mode: str) -> int:
    """Training shards to download (nanochat.dataset -n); the val shard comes on top."""
    if mode == "smoke" or sizing is None or not sizing.num_iterations:
        return MIN_SHARDS
    train = math.ceil(sizing.train_tokens / TOKENS_PER_SHARD - 1e-9) + PAD_SHARDS
    return min(VAL_SHARD, max(MIN_SHARDS, train))


# ---------------------------------------------------------------------------------------------
# Stages (runs/speedrun.sh) that need the internet at run time

NEEDS_INTERNET = {
    "data": "downloads shards from huggingface.co",
    "tok_eval": "downloads the GPT-2 and cl100k vocabularies",
    "base_eval": "downloads the CORE eval bundle",
    "chat_sft": "downloads its SFT datasets",
    "chat_eval": "downloads its eval datasets",
}
