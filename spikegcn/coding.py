r"""Single-spike phase coding (Hwang & Kung, Eq. 3-5) and binary multi-spike input coding.

A hidden one-spike neuron fires at most once in a window of :math:`T` phases. A spike at phase
:math:`t \in \{1..T\}` stands for the normalised value

.. math::
    v_t = Q^{-(t-1)}, \qquad \hat a \in \{1, Q^{-1}, \dots, Q^{-(T-1)}\} \cup \{0\}.

The neuron fires at the first phase whose (shifted) threshold its activation reaches:

.. math::
    t^* = \min\{t : a \ge c_Q\, Q^{-(t-1)}\}, \qquad
    c_Q = \begin{cases} (1+Q)/(2Q) & \text{round-off (Eq. 4, threshold shift)} \\ 1 & \text{floor (Eq. 3)} \end{cases}

Values above 1 saturate at phase 1; values below the underflow bound :math:`c_Q Q^{-(T-1)}` never fire.

The external input is coded with conventional binary phase coding (base 2, many spikes): the greedy
(floor) binary expansion :math:`\tilde x = \sum_{t=1}^{T} b_t 2^{-t}` of :math:`\tilde x = |x|/\lambda^0 \in [0, 1)`,
with an optional sign per element.

Phases are stored as small integers (``0`` = silent), never as :math:`T` float planes: ``int8`` for
:math:`T \le 127`, ``int16`` up to :data:`MAX_T` = 32767. :class:`PhaseCode` also refuses codes whose smallest
threshold :math:`c_Q Q^{-(T-1)}` is not a normal float32 number (at :math:`Q = 1.3`: :math:`T > 333`): it would
round to 0 and silent neurons (activation 0) would fire at phase :math:`T`.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "PhaseCode",
    "MAX_T",
    "phase_dtype",
    "saturated_count",
    "encode",
    "encode_counted",
    "decode",
    "quantize",
    "encode_binary",
    "encode_binary_counted",
    "decode_binary",
    "binary_bitplanes",
    "binary_spike_count",
    "mape",
    "best_base",
]


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


MAX_T = 32767  # fire phases are stored as int16 beyond T = 127


def phase_dtype(T: int) -> torch.dtype:
    """Smallest signed integer dtype that holds phases ``0..T`` (``T <= MAX_T``)."""
    if T > MAX_T:
        raise ValueError(f"T = {T} exceeds the longest supported window T = {MAX_T} (fire phases are int16)")
    return torch.int8 if T <= 127 else torch.int16


def max_T(Q: float, shift: bool = True, dtype: torch.dtype = torch.float32) -> int:
    """Longest window whose thresholds :math:`c_Q Q^{-(t-1)}` are all normal numbers of ``dtype``."""
    c = (1.0 + Q) / (2.0 * Q) if shift else 1.0
    return min(MAX_T, 1 + math.floor((math.log(c) - math.log(torch.finfo(dtype).tiny)) / math.log(Q)))


def _check_range(T: int, Q: float, shift: bool, dtype: torch.dtype) -> None:
    # In log space: Q ** -(T - 1) itself underflows Python floats for long codes.
    if T > max_T(Q, shift, dtype):
        c = (1.0 + Q) / (2.0 * Q) if shift else 1.0
        lg = (math.log(c) - (T - 1) * math.log(Q)) / math.log(10)
        raise ValueError(f"PhaseCode(T={T}, Q={Q:g}): the smallest threshold c*Q^-(T-1) = "
                         f"{10 ** (lg - math.floor(lg)):.2g}e{math.floor(lg)} "
                         f"underflows {str(dtype).replace('torch.', '')} (smallest normal "
                         f"{torch.finfo(dtype).tiny:.3g}), so neurons with activation 0 would fire at phase T; "
                         f"use T <= {max_T(Q, shift, dtype)} for Q = {Q:g}, or a larger Q")


@dataclass(frozen=True)
class PhaseCode:
    r"""Configuration of single-spike phase coding.

    Args:
        T (int): phases in one coding window (``T >= 1``).
        Q (float): coding base of hidden layers (``Q > 1``; the paper uses 1.3 for ``T = 16``).
        shift (bool, optional): round-off encoding with threshold shift :math:`c_Q = (1+Q)/(2Q)` (Eq. 4).
            ``False`` gives the floor encoding of Eq. 3. (default: ``True``)
        Tw (int, optional): wait time, the phases a layer integrates before it may emit its first spike
            (``Tw >= 0``). ``None`` means ``Tw = T``, for which every layer is exactly a round-off
            quantised ReLU. (default: ``None``)
    """

    T: int
    Q: float
    shift: bool = True
    Tw: int | None = None

    def __post_init__(self):
        object.__setattr__(self, "T", _check_int("T", self.T, 1))
        try:
            q = float(self.Q)
        except (TypeError, ValueError):
            raise ValueError(f"Q must be a real number > 1, got {self.Q!r}") from None
        if not math.isfinite(q) or q <= 1.0:
            raise ValueError(f"Q must be a finite real number > 1, got {self.Q!r}")
        object.__setattr__(self, "Q", q)
        if not isinstance(self.shift, (bool, np.bool_)):
            raise ValueError(f"shift must be a bool, got {self.shift!r}")
        object.__setattr__(self, "shift", bool(self.shift))
        tw = self.T if self.Tw is None else _check_int("Tw", self.Tw, 0)
        object.__setattr__(self, "Tw", tw)
        if self.T > MAX_T:
            raise ValueError(f"T = {self.T} exceeds the longest supported window T = {MAX_T} (fire phases are "
                             f"stored as int16)")
        _check_range(self.T, q, self.shift, torch.float32)  # float32: the default compute dtype

    # ----------------------------------------------------------------------------------------- derived
    @property
    def c(self) -> float:
        """Threshold-shift factor :math:`c_Q` (1 without shift)."""
        return (1.0 + self.Q) / (2.0 * self.Q) if self.shift else 1.0

    @property
    def min_value(self) -> float:
        """Smallest non-zero representable value :math:`Q^{-(T-1)}`."""
        return self.Q ** -(self.T - 1)

    @property
    def underflow_bound(self) -> float:
        """Activations below :math:`c_Q Q^{-(T-1)}` do not fire."""
        return self.c * self.min_value

    @property
    def max_relative_error(self) -> float:
        """Worst relative error inside the representable range: (Q-1)/(Q+1) round-off, (Q-1)/Q floor."""
        return (self.Q - 1) / (self.Q + 1) if self.shift else (self.Q - 1) / self.Q

    @property
    def functional(self) -> bool:
        """True when every input phase has arrived before the first output phase (Tw >= T)."""
        return self.Tw >= self.T

    @property
    def phase_dtype(self) -> torch.dtype:
        return phase_dtype(self.T)

    def values(self, dtype: torch.dtype = torch.float32, device=None) -> Tensor:
        """``[T + 1]`` lookup table: entry 0 is 0 (silent), entry t is :math:`Q^{-(t-1)}`."""
        if dtype.is_floating_point:
            _check_range(self.T, self.Q, self.shift, dtype)
        return _values(self.T, self.Q, dtype, str(torch.device(device or "cpu")))

    def thresholds(self, dtype: torch.dtype = torch.float32, device=None) -> Tensor:
        """``[T]`` firing thresholds :math:`c_Q Q^{-(t-1)}`, t = 1..T (decreasing); a ``dtype`` in which the
        smallest one underflows (e.g. float16 for long codes) raises ``ValueError``."""
        _check_range(self.T, self.Q, self.shift, dtype)
        return _thresholds(self.T, self.Q, self.c, dtype, str(torch.device(device or "cpu")))

    def replace(self, **kw) -> "PhaseCode":
        d = dict(T=self.T, Q=self.Q, shift=self.shift, Tw=self.Tw)
        if "T" in kw and "Tw" not in kw and self.Tw == self.T:
            d["Tw"] = None  # keep "Tw = T" when only T changes
        d.update(kw)
        return PhaseCode(**d)

    def __repr__(self) -> str:
        return f"PhaseCode(T={self.T}, Q={self.Q:g}, shift={self.shift}, Tw={self.Tw})"


# Tables are computed once in float64 and rounded to the compute dtype, so every path (closed form,
# phase-stepped neuron, membrane reference) compares against the very same numbers.
@lru_cache(maxsize=256)
def _values(T: int, Q: float, dtype: torch.dtype, device: str) -> Tensor:
    v = torch.zeros(T + 1, dtype=torch.float64, device="cpu")  # built on the CPU whatever the default device
    v[1:] = Q ** -torch.arange(T, dtype=torch.float64, device="cpu")
    return v.to(dtype=dtype, device=device)


@lru_cache(maxsize=256)
def _thresholds(T: int, Q: float, c: float, dtype: torch.dtype, device: str) -> Tensor:
    thr = c * Q ** -torch.arange(T, dtype=torch.float64, device="cpu")
    return thr.to(dtype=dtype, device=device)


@lru_cache(maxsize=64)
def _phase_lut(T: int, device: str) -> Tensor:
    # number of thresholds <= a  ->  fire phase (0 thresholds reached: silent)
    lut = torch.tensor([0] + [T + 1 - n for n in range(1, T + 1)], dtype=phase_dtype(T), device="cpu")
    return lut.to(device)


def _check_finite(x: Tensor, what: str) -> None:
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        raise _nonfinite_input(what, int((~torch.isfinite(x)).sum()))


def _nonfinite_input(what: str, count: int) -> ValueError:
    return ValueError(f"{what} contains {count} NaN/inf value(s); one-spike coding needs finite activations")


# --------------------------------------------------------------------------------- single-spike code
_FAST_MIN = 1 << 16  # below this the torch path is as fast as the compiled one


def encode(x: Tensor, code: PhaseCode, signed: bool = False, check: bool = True) -> tuple[Tensor, Tensor | None]:
    r"""Fire phase of every neuron for normalised activations ``x`` (Eq. 3/4).

    Args:
        x (Tensor): normalised activations :math:`a = y/\lambda` (any shape, floating point).
        code (PhaseCode): the code.
        signed (bool): signed one-spike neurons (docs/method.md, A14) fire on :math:`|a|` and carry the sign of ``a``;
            unsigned (ReLU) neurons never fire for ``a <= 0``.
        check (bool): raise on NaN/inf input (one reduction over ``x``).

    Returns:
        ``(phase, sign)``: ``phase`` holds ``0`` (silent) or ``1..T`` in :func:`phase_dtype`; ``sign`` is an
        ``int8`` tensor of -1/0/+1 for signed neurons, else ``None``.
    """
    phase, sign, _, _ = encode_counted(x, code, signed, check, count=False)
    return phase, sign


def nonfinite_error(count: int) -> ValueError:
    """The encoder's error for ``count`` NaN/inf inputs (the compiled passes count them)."""
    return ValueError(f"encode input contains {count} NaN/inf value(s); one-spike coding needs finite activations")


def encode_counted(x: Tensor, code: PhaseCode, signed: bool = False, check: bool = True, count: bool = True
                   ) -> tuple[Tensor, Tensor | None, int | None, int | None]:
    """:func:`encode` plus the number of saturated neurons (:func:`saturated_count`) and of fired neurons, taken in
    the encoder's own pass on the compiled path (``None`` for both when ``count`` is false)."""
    if not x.is_floating_point():
        raise TypeError(f"encode expects a floating-point tensor, got {x.dtype}")
    # thresholds ascending: count of thresholds <= a = T - (t* - 1); exact, no log/rounding issues
    thr_asc = code.thresholds(x.dtype, x.device).flip(0)
    if x.numel() >= _FAST_MIN and x.dtype == torch.float32 and x.device.type == "cpu":
        from .kernels import fused_cpu

        fast = fused_cpu.encode_phase(x, thr_asc, signed)
        if fast is not None:
            if check and fast[2]:
                raise nonfinite_error(fast[2])
            return fast[0], fast[1], (fast[3] if count else None), (fast[4] if count else None)
    if check:
        _check_finite(x, "encode input")
    mag = x.abs() if signed else x
    n_le = torch.searchsorted(thr_asc, mag.contiguous(), right=True, out_int32=True)
    phase = torch.take(_phase_lut(code.T, str(x.device)), n_le.long())
    sign = None
    if signed:
        sign = torch.sign(x).to(torch.int8) * (phase > 0)
    if not count:
        return phase, sign, None, None
    fired = 0 if phase.device.type == "meta" else int(torch.count_nonzero(phase))
    return phase, sign, saturated_count(x, signed), fired


def _check_phases(phase: Tensor, T: int) -> None:
    """Fire phases must lie in ``0..T``: a larger one would read past the value table (garbage on the compiled
    path), a negative one would wrap around to the end of it."""
    if phase.is_floating_point() or phase.is_complex() or phase.dtype == torch.bool:
        raise TypeError(f"decode expects integer fire phases, got {phase.dtype}")
    if phase.numel() == 0 or phase.device.type == "meta":
        return
    lo, hi = (int(v) for v in torch.aminmax(phase))
    if lo < 0 or hi > T:
        bad = int(((phase < 0) | (phase > T)).sum())
        raise ValueError(f"decode: {bad} fire phase(s) outside 0..T = 0..{T} (found {lo}..{hi}); phases must come "
                         f"from encode() with the same code (0 = silent, 1..T = fire phase)")


def decode(phase: Tensor, code: PhaseCode, sign: Tensor | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
    """Normalised value :math:`\\pm Q^{-(t-1)}` (0 for silent neurons) of fire phases ``0..T`` (others raise)."""
    if phase.numel() >= _FAST_MIN and dtype == torch.float32:
        v = _decode_fast(phase, code, sign, torch.ones(1, device=phase.device))  # checks the phases
        if v is not None:
            return v
    else:
        _check_phases(phase, code.T)
    v = code.values(dtype, phase.device)[phase.long()]
    if sign is not None:
        v = v * sign.to(dtype)
    return v


def _decode_fast(phase: Tensor, code: PhaseCode, sign: Tensor | None, scale: Tensor) -> Tensor | None:
    """The compiled decoder (it checks the phases in its pass), or ``None`` after checking them here."""
    from .kernels import fused_cpu

    v = fused_cpu.decode_phase(phase, code.values(torch.float32), sign, scale)
    if v is None:
        _check_phases(phase, code.T)
    return v


def saturated_count(a: Tensor, signed: bool = False) -> int:
    """Neurons whose normalised activation exceeds 1 (``|a| > 1`` for signed ones): the encoder clips them to
    phase 1, i.e. to :math:`\\lambda` (one pass over ``a``)."""
    if a.device.type == "meta":
        return 0
    return int(torch.count_nonzero((a.abs() if signed else a) > 1))  # count_nonzero: about 2x faster than .sum()


def quantize(x: Tensor, code: PhaseCode, signed: bool = False) -> Tensor:
    """The value a one-spike neuron transmits for normalised activations ``x`` (encode, then decode).

    ``code.shift=False`` gives the floor variant (Eq. 3). For unsigned neurons negative inputs give 0.
    """
    phase, sign = encode(x, code, signed=signed)
    return decode(phase, code, sign, dtype=x.dtype)


# ------------------------------------------------------------------------------ binary input code
def encode_binary(x: Tensor, T: int, signed: bool = True) -> tuple[Tensor, Tensor | None]:
    r"""Binary multi-spike phase coding of normalised inputs (docs/method.md, section 1.1).

    Greedy floor expansion :math:`|x| = \sum_{t=1}^{T} b_t 2^{-t}`; the bits are returned packed in an
    integer ``m = floor(|x| 2^T)`` (bit ``T-t`` of ``m`` is the spike at phase ``t``). Values ``>= 1``
    saturate at :math:`1 - 2^{-T}`.

    Returns:
        ``(bits, sign)``: ``bits`` int32 (T <= 30) or int64; ``sign`` int8 or ``None`` when ``signed=False``
        (then negative inputs must not occur).
    """
    bits, sign, _ = encode_binary_counted(x, T, signed, count=False)
    return bits, sign


def encode_binary_counted(x: Tensor, T: int, signed: bool = True, count: bool = True
                          ) -> tuple[Tensor, Tensor | None, int | None]:
    """:func:`encode_binary` plus the number of saturated inputs (:func:`saturated_count` with ``signed=True``:
    ``|x| > 1``), taken in the encoder's own pass on the compiled path (float32 on the CPU); ``None`` for it on the
    torch path without ``count``."""
    T = _check_int("T", T, 1)
    if T > 62:
        raise ValueError(f"binary input coding supports T <= 62, got {T}")
    if not x.is_floating_point():
        raise TypeError(f"encode_binary expects a floating-point tensor, got {x.dtype}")
    from .kernels import fused_cpu

    fast = fused_cpu.encode_binary(x, T, signed)  # None off the CPU, for other dtypes or without the kernels
    if fast is not None:
        bits, sign, bad, neg, sat = fast
        if bad:
            raise _nonfinite_input("binary encoder input", bad)
    else:
        _check_finite(x, "binary encoder input")
        neg = int(not signed and bool((x < 0).any()))
    if not signed and neg:
        raise ValueError("encode_binary(signed=False) got negative inputs; use signed=True")
    if fast is not None:
        return bits, sign, sat

    # in place on fresh buffers (a large graph's chunk sources: tens of MB each, see fused_cpu.empty); exact:
    # scaling a float by a power of two loses nothing in float64. The clip to 2^T - 1 is on the integers: in
    # float64 it rounds to 2^T from T = 54 on.
    with torch.no_grad():  # a code, not a differentiable map
        mag = fused_cpu.empty(x.shape, torch.float64, x.device).copy_(x).abs_()
        mag.mul_(2.0**T).floor_().clamp_(0, 2.0**T)
        bits = fused_cpu.empty(x.shape, torch.int32 if T <= 30 else torch.int64, x.device).copy_(mag)
        bits.clamp_(max=2**T - 1)
    sign = torch.sign(x).to(torch.int8) * (bits != 0) if signed else None
    return bits, sign, (saturated_count(x, signed=True) if count else None)


def decode_binary(bits: Tensor, T: int, sign: Tensor | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
    """Normalised value :math:`\\pm\\sum_t b_t 2^{-t}` of packed binary codes."""
    from .kernels import fused_cpu

    if dtype == torch.float32:
        fast = fused_cpu.decode_binary(bits, T, sign)  # the same products and rounding, in one pass
        if fast is not None:
            return fast
    v = fused_cpu.empty(bits.shape, torch.float64, bits.device).copy_(bits).mul_(2.0**-T)  # fresh: in place
    if dtype != torch.float64:
        v = fused_cpu.empty(bits.shape, dtype, bits.device).copy_(v)
    return v if sign is None else v.mul_(sign.to(dtype))


def binary_bitplanes(bits: Tensor, T: int) -> Tensor:
    """``[T, *shape]`` bool spike planes of packed codes (plane ``t-1`` = spike at phase ``t``)."""
    shifts = torch.arange(T - 1, -1, -1, device=bits.device, dtype=bits.dtype)
    return ((bits.unsqueeze(0) >> shifts.view(-1, *([1] * bits.dim()))) & 1).bool()


def binary_spike_count(bits: Tensor, T: int) -> Tensor:
    """Number of input spikes (popcount of the T-bit code) per element, int64."""
    # SWAR popcount of the 64-bit word (codes are non-negative and below 2^62): 8 passes instead of 3 T
    b = bits.to(torch.int64)
    b = b - ((b >> 1) & 0x5555555555555555)
    b = (b & 0x3333333333333333) + ((b >> 2) & 0x3333333333333333)
    b = (b + (b >> 4)) & 0x0F0F0F0F0F0F0F0F
    return ((b * 0x0101010101010101) >> 56) & 0xFF  # the product wraps; its top byte is the count


# ---------------------------------------------------------------------------------------- Eq. 5
def mape(Q: float, T: int, mu: float = 0.0, sigma: float = 1.0, shift: bool = True, normalize: bool = True) -> float:
    r"""Mean absolute percentage error of single-spike encoding under Gaussian activations (Eq. 5).

    .. math::
        \mathrm{MAPE}(Q, T) = \int_0^1 \frac{|\hat a(a) - a|}{a} f(a;\mu,\sigma)\, da
        \;\Big/ \int_0^1 f(a)\, da \quad (\text{if } \texttt{normalize})

    computed exactly, piece by piece between the encoder's breakpoints :math:`c_Q Q^{-k}` with
    :func:`scipy.integrate.quad`. Returned as a fraction (multiply by 100 for %).
    """
    from scipy import integrate, stats

    code = PhaseCode(T, Q, shift=shift)
    if not (sigma > 0):
        raise ValueError(f"sigma must be > 0, got {sigma}")
    pdf = stats.norm(mu, sigma).pdf
    c, Qf, T = code.c, code.Q, code.T
    # breakpoints ascending: c Q^{-(T-1)} < ... < c Q^{-1} < c (<= 1)
    bps = [c * Qf ** -(k) for k in range(T - 1, -1, -1)]
    total = integrate.quad(pdf, 0.0, bps[0], epsabs=1e-13, epsrel=1e-11)[0]  # underflow: 100 % error

    def piece(v: float, lo: float, hi: float) -> float:
        out = 0.0
        if lo < v:  # a < v: (v - a)/a
            out += integrate.quad(lambda a: (v / a - 1.0) * pdf(a), lo, min(v, hi), epsabs=1e-13, epsrel=1e-11)[0]
        if hi > v:
            out += integrate.quad(lambda a: (1.0 - v / a) * pdf(a), max(v, lo), hi, epsabs=1e-13, epsrel=1e-11)[0]
        return out

    for i in range(T):
        lo = bps[i]
        hi = bps[i + 1] if i + 1 < T else 1.0
        v = Qf ** -(T - 1 - i)  # value fired between these breakpoints
        total += piece(v, lo, min(hi, 1.0))
    if normalize:
        total /= stats.norm(mu, sigma).cdf(1.0) - stats.norm(mu, sigma).cdf(0.0)
    return float(total)


def best_base(
    T: int, mu: float = 0.0, sigma: float = 1.0, shift: bool = True, grid: np.ndarray | None = None
) -> float:
    """The base ``Q`` on ``grid`` (default 1.01..2.00 step 0.01) that minimises :func:`mape` for ``T``.

    ``best_base(16) == 1.31`` and ``best_base(24) == 1.22`` (docs/method.md, section 6).
    """
    T = _check_int("T", T, 1)
    if grid is None:
        grid = np.round(np.arange(101, 201) / 100.0, 2)
    errs = [mape(float(q), T, mu, sigma, shift) for q in grid]
    return float(grid[int(np.argmin(errs))])
