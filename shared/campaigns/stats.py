"""Statistics as BigQuery SQL expressions, so a report's numbers are computed where its counts are.

BigQuery has no normal or chi-square distribution functions, so the tails are written out:

- the standard normal tail ``Φ(-|z|)`` is Hart's rational approximation (1968) as published by West, "Better
  approximations to cumulative normal functions" (2005): double-precision accurate, which is what lets the tests
  hold a p-value to scipy's within 1e-12;
- the chi-square tail with ``df`` degrees of freedom is exact for every integer ``df``: for even ``df = 2m``,
  ``exp(-x/2) Σ_{j<m} (x/2)^j / j!``; for odd ``df = 2m+1``, ``2Φ(-√x) + exp(-x/2) √(2/π) Σ_{j=1..m} x^{j-1/2} /
  (1·3·…·(2j-1))``. ``df`` is the number of arms minus one, known when the query is built.

Every argument is a column or expression the caller builds from the schema, never text from a definition.
"""

from __future__ import annotations

import math

# Two-sided 95%: scipy.stats.norm.ppf(0.975).
Z_95 = 1.959963984540054


_NUMERATOR = (3.52624965998911e-02, 0.700383064443688, 6.37396220353165, 33.912866078383, 112.079291497871,
              221.213596169931, 220.206867912376)
_DENOMINATOR = (8.83883476483184e-02, 1.75566716318264, 16.064177579207, 86.7807322029461, 296.564248779674,
                637.333633378831, 793.826512519948, 440.413735824752)


def _polynomial(coefficients: tuple[float, ...], x: str) -> str:
    """``c0 x^k + ... + ck`` written flat (powers, not Horner's nesting: the emulator plans deep nesting slowly)."""
    k = len(coefficients) - 1
    return "(" + " + ".join(f"{c!r} * POW({x}, {k - i})" if k - i else repr(c) for i, c in enumerate(coefficients)) + ")"


def normal_tail(x: str) -> str:
    """``Φ(-x)`` for ``x >= 0``, a plain column (callers take ``ABS`` first, in a column of its own).

    West's rational branch on the whole half-line: below 7.07 it is the published double-precision form; beyond, the
    published continued fraction would add digits to values under 1e-12, and the rational form's leading term is
    already the tail's asymptote (0.0353/0.0884 = 1/sqrt(2π)), so the absolute error stays below 1e-15 (tests).
    """
    return f"(EXP(-{x} * {x} / 2.0) * {_polynomial(_NUMERATOR, x)} / {_polynomial(_DENOMINATOR, x)})"


def two_sided_p(abs_z: str) -> str:
    """The two-sided p-value of a z statistic, from a plain column holding ``|z|``."""
    return f"(2.0 * {normal_tail(abs_z)})"


def chi_square_tail(x: str, root_x: str, df: int) -> str:
    """``P(X > x)`` for ``X`` chi-square with ``df`` degrees of freedom (exact closed forms; ``df >= 1``); ``x``
    and ``root_x`` (its square root) are plain columns."""
    if df < 1:
        raise ValueError("a chi-square test needs at least one degree of freedom")
    if df % 2 == 0:
        terms = ["1.0"]
        for j in range(1, df // 2):
            terms.append(f"POW({x} / 2.0, {j}) / {math.factorial(j)}.0")
        return f"(EXP(-{x} / 2.0) * ({' + '.join(terms)}))"
    tail = f"2.0 * {normal_tail(root_x)}"
    if df == 1:
        return f"({tail})"
    terms = []
    odd_product = 1
    for j in range(1, df // 2 + 1):
        odd_product *= 2 * j - 1
        terms.append(f"POW({x}, {j} - 0.5) / {odd_product}.0")
    return f"({tail} + EXP(-{x} / 2.0) * SQRT(2.0 / ACOS(-1.0)) * ({' + '.join(terms)}))"

