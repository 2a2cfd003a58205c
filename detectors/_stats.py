"""Small, fast tail-probability helpers shared by the detectors.

Why hand-written: the detector banks evaluate tails for whole arrays of series
every tick, and only the ``scipy.special`` kernels (``ndtr``, ``betainc``) are
both vectorised and exact; ``scipy.stats`` distribution objects add 50–100 µs
of argument checking per call. Banks call the exact tail only on the few
series near alerting, a normal approximation elsewhere.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import betainc as _betainc
from scipy.special import ndtr as _ndtr

from detectors.base import FloatArray

#: Tail probabilities are clipped here so ``1 − p`` stays representable and
#: distinct from 1.0 in a float: scores stay ordered even far in the tail.
P_FLOOR = 1e-15


def ew_alpha(bucket: float, half_life: float) -> float:
    """Per-bucket weight of an exponentially weighted average whose memory
    halves every ``half_life`` seconds (buckets of ``bucket`` seconds)."""
    return 1.0 - 2.0 ** (-bucket / max(half_life, bucket))


def normal_isf(p: float) -> float:
    """Inverse of the standard normal's upper tail (Acklam's approximation, |err| < 1e-9).

    Examples
    --------
    >>> round(normal_isf(0.05), 4)
    1.6449
    """
    p = min(max(p, 1e-300), 1.0 - 1e-16)
    q = 1.0 - p  # the lower-tail probability whose quantile we want
    a = (-3.969683028665376e01, 2.209460984245205e02, -2.759285104469687e02,
         1.383577518672690e02, -3.066479806614716e01, 2.506628277459239e00)
    b = (-5.447609879822406e01, 1.615858368580409e02, -1.556989798598866e02,
         6.680131188771972e01, -1.328068155288572e01)
    c = (-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e00,
         -2.549732539343734e00, 4.374664141464968e00, 2.938163982698783e00)
    d = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e00,
         3.754408661907416e00)
    lo = 0.02425
    if q < lo:
        r = math.sqrt(-2.0 * math.log(q))
        return (((((c[0] * r + c[1]) * r + c[2]) * r + c[3]) * r + c[4]) * r + c[5]) / (
            (((d[0] * r + d[1]) * r + d[2]) * r + d[3]) * r + 1.0)
    if q > 1.0 - lo:
        r = math.sqrt(-2.0 * math.log(p))
        return -(((((c[0] * r + c[1]) * r + c[2]) * r + c[3]) * r + c[4]) * r + c[5]) / (
            (((d[0] * r + d[1]) * r + d[2]) * r + d[3]) * r + 1.0)
    r = q - 0.5
    s = r * r
    return (((((a[0] * s + a[1]) * s + a[2]) * s + a[3]) * s + a[4]) * s + a[5]) * r / (
        ((((b[0] * s + b[1]) * s + b[2]) * s + b[3]) * s + b[4]) * s + 1.0)


def normal_sf(z: FloatArray) -> FloatArray:
    """Upper tail of the standard normal, ``P(Z ≥ z)``, of every element.

    Examples
    --------
    >>> normal_sf(np.array([0.0, 1.6448536])).round(4).tolist()
    [0.5, 0.05]
    """
    return _ndtr(-z)


def nb_upper_midp(x: FloatArray, mean: FloatArray, phi: FloatArray) -> FloatArray:
    """Mid-p upper tail ``P(X > x) + ½·P(X = x)`` of negative binomial counts, elementwise.

    ``phi`` is the over-dispersion: ``Var X = mean + phi·mean²`` (above 0:
    the detectors' floors keep it so). The mid-p value is used because counts
    are discrete: with plain ``P(X ≥ x)`` a low-count series could never reach
    its nominal false-alarm rate, and scores would mean less on quiet series
    than on busy ones. ``P(X ≥ k)`` is the regularised incomplete beta
    function ``I_q(k, 1/phi)`` with ``q = mean / (mean + 1/phi)``.

    Examples
    --------
    >>> p = nb_upper_midp(np.array([0.0, 10.0]), np.array([3.0, 3.0]), np.array([1e-4, 1e-4]))
    >>> [round(float(v), 4) for v in p]    # about Poisson(3): 1 − P(0)/2, P(X>10)+P(X=10)/2
    [0.9751, 0.0007]
    """
    k = np.floor(x)
    r = 1.0 / phi
    q = mean / (mean + r)
    pos = k > 0.0
    kk = np.where(pos, k, 1.0)  # betainc needs a > 0; the k = 0 rows are replaced below
    mid = 0.5 * (_betainc(kk, r, q) + _betainc(kk + 1.0, r, q))
    zero = 1.0 - 0.5 * (1.0 + phi * mean) ** (-r)
    return np.maximum(np.where(pos, mid, zero), 1e-300)


def nb_lower_midp(x: FloatArray, mean: FloatArray, phi: FloatArray) -> FloatArray:
    """Mid-p lower tail ``P(X < x) + ½·P(X = x)`` of negative binomial counts, elementwise.

    The complement of :func:`nb_upper_midp`, computed directly
    (``P(X < k) = I_{1−q}(1/phi, k)``) so that a tail of 1e-12 keeps its
    digits, where ``1 − nb_upper_midp`` would have lost them.

    Examples
    --------
    >>> p = nb_lower_midp(np.array([0.0, 3.0]), np.array([3.0, 3.0]), np.array([1e-4, 1e-4]))
    >>> [round(float(v), 4) for v in p]    # about Poisson(3): P(0)/2, P(X<3)+P(X=3)/2
    [0.0249, 0.5352]
    >>> float(nb_lower_midp(np.array([0.0]), np.array([400.0]), np.array([0.09]))[0]) < 1e-11
    True
    """
    k = np.floor(x)
    r = 1.0 / phi
    q = mean / (mean + r)
    pos = k > 0.0
    kk = np.where(pos, k, 1.0)  # betainc needs b > 0; the k = 0 rows are replaced below
    zero = 0.5 * (1.0 + phi * mean) ** (-r)  # ½·P(X = 0)
    mid = 0.5 * (_betainc(r, kk, 1.0 - q) + _betainc(r, kk + 1.0, 1.0 - q))
    return np.maximum(np.where(pos, mid, zero), 1e-300)


def nb_dispersion(mean: FloatArray, var: FloatArray, floor: float) -> FloatArray:
    """The negative binomial's ``phi`` with this mean and variance (``var = mean + phi·mean²``),
    at least ``floor``: a pooled count (an hour's) is taken as negative binomial by its moments.

    Examples
    --------
    >>> float(nb_dispersion(np.array(10.0), np.array(30.0), 1e-4))
    0.2
    """
    return np.maximum((var - mean) / (mean * mean), floor)


def nb_quantile(p_upper: float, mean: FloatArray, phi: FloatArray) -> FloatArray:
    """Approximate upper quantiles of negative binomials (Cornish–Fisher, 1 term).

    Used for explanation bands only, so a fast continuous approximation is
    enough; clipped at zero. Elementwise over ``mean`` and ``phi``: the
    bands of every series are asked for at once.

    Examples
    --------
    >>> 12.0 < float(nb_quantile(0.001, np.float64(5.0), np.float64(0.0))) < 14.0    # exact: 13
    True
    """
    var = mean + phi * mean * mean
    sd = np.sqrt(np.maximum(var, 1e-12))
    z = normal_isf(p_upper)
    skew = (mean + 3.0 * phi * mean * mean + 2.0 * phi * phi * mean ** 3) / (sd ** 3)
    return np.maximum(0.0, mean + sd * (z + (z * z - 1.0) * skew / 6.0))
