"""Statistics as BigQuery SQL expressions, so a report's numbers are computed where its counts are.

BigQuery has no normal or chi-square distribution functions, so the tails are written out:

- the standard normal tail ``Φ(-|z|)`` is Hart's rational approximation (1968) as published by West, "Better
  approximations to cumulative normal functions" (2005): double-precision accurate over the whole line, which is
  what lets the tests hold a p-value to scipy's within 1e-12;
- the chi-square tail with ``df`` degrees of freedom is exact for every integer ``df``: for even ``df = 2m``,
  ``exp(-x/2) Σ_{j<m} (x/2)^j / j!``; for odd ``df = 2m+1``, ``2Φ(-√x) + exp(-x/2) √(2/π) Σ_{j=1..m} x^{j-1/2} /
  (1·3·…·(2j-1))``. ``df`` is the number of arms minus one, known when the query is built.

Every argument is a column or expression the caller builds from the schema, never text from a definition.
"""

from __future__ import annotations

# Two-sided 95%: scipy.stats.norm.ppf(0.975).
Z_95 = 1.959963984540054


def normal_tail(x: str) -> str:
    """``Φ(-|x|)``: the probability that a standard normal variable is above ``|x|``."""
    a = f"ABS({x})"
    numerator = (
        f"((((((3.52624965998911E-02 * {a} + 0.700383064443688) * {a} + 6.37396220353165) * {a}"
        f" + 33.912866078383) * {a} + 112.079291497871) * {a} + 221.213596169931) * {a} + 220.206867912376)"
    )
    denominator = (
        f"(((((((8.83883476483184E-02 * {a} + 1.75566716318264) * {a} + 16.064177579207) * {a}"
        f" + 86.7807322029461) * {a} + 296.564248779674) * {a} + 637.333633378831) * {a}"
        f" + 793.826512519948) * {a} + 440.413735824752)"
    )
    far = f"({a} + 1.0 / ({a} + 2.0 / ({a} + 3.0 / ({a} + 4.0 / ({a} + 0.65)))))"
    return (
        f"(CASE WHEN {a} > 37 THEN 0.0"
        f" WHEN {a} < 7.07106781186547 THEN EXP(-{a} * {a} / 2.0) * {numerator} / {denominator}"
        f" ELSE EXP(-{a} * {a} / 2.0) / {far} / 2.506628274631 END)"
    )


def two_sided_p(z: str) -> str:
    """The two-sided p-value of a z statistic."""
    return f"(2.0 * {normal_tail(z)})"


def chi_square_tail(x: str, df: int) -> str:
    """``P(X > x)`` for ``X`` chi-square with ``df`` degrees of freedom (exact closed forms; ``df >= 1``)."""
    if df < 1:
        raise ValueError("a chi-square test needs at least one degree of freedom")
    if df % 2 == 0:
        terms = ["1.0"]
        for j in range(1, df // 2):
            terms.append(f"POW({x} / 2.0, {j}) / {_factorial(j)}.0")
        return f"(EXP(-{x} / 2.0) * ({' + '.join(terms)}))"
    tail = f"2.0 * {normal_tail(f'SQRT({x})')}"
    if df == 1:
        return f"({tail})"
    terms = []
    odd_product = 1
    for j in range(1, df // 2 + 1):
        odd_product *= 2 * j - 1
        terms.append(f"POW({x}, {j} - 0.5) / {odd_product}.0")
    return f"({tail} + EXP(-{x} / 2.0) * SQRT(2.0 / ACOS(-1.0)) * ({' + '.join(terms)}))"


def _factorial(n: int) -> int:
    out = 1
    for i in range(2, n + 1):
        out *= i
    return out
