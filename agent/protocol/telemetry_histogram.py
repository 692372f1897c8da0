"""Quantiles of the fixed-edge histograms telemetry windows carry (latency, predictions, features).

Histograms follow the one binning rule of ``agent.binning``: for edges
e_0..e_k, bin 0 is underflow (< e_0), bin i is [e_{i-1}, e_i), bin k+1 overflow.
"""

from agent.protocol.telemetry_rules import LATENCY_EDGES_MS


def histogram_quantile(counts: tuple[int, ...] | list[int], q: float,
                       edges: tuple[float, ...] = LATENCY_EDGES_MS) -> float | None:
    """The ``q`` quantile (0..1) of a histogram on ``edges``, interpolated geometrically within a bin.

    Samples in the underflow bin count as ``edges[0]``, in the overflow bin as ``edges[-1]``.
    None for an empty histogram.
    """
    total = sum(counts)
    if total <= 0:
        return None
    rank = q * total
    seen = 0
    for index, count in enumerate(counts):
        if count and seen + count >= rank:
            if index == 0:
                return edges[0]
            if index > len(edges) - 1:
                return edges[-1]
            low, high = edges[index - 1], edges[index]
            fraction = min(1.0, max(0.0, (rank - seen) / count))
            if low > 0:
                return low * (high / low) ** fraction
            return low + (high - low) * fraction
        seen += count
    return edges[-1]


def histogram_quantiles(counts: tuple[int, ...] | list[int], qs: tuple[float, ...],
                        edges: tuple[float, ...] = LATENCY_EDGES_MS) -> tuple[float | None, ...]:
    """``histogram_quantile`` for several ``qs`` (ascending) in one pass over the bins."""
    total = sum(counts)
    if total <= 0:
        return (None,) * len(qs)
    found: list[float] = []
    seen = 0
    for index, count in enumerate(counts):
        while count and len(found) < len(qs) and seen + count >= qs[len(found)] * total:
            rank = qs[len(found)] * total
            if index == 0:
                found.append(edges[0])
            elif index > len(edges) - 1:
                found.append(edges[-1])
            else:
                low, high = edges[index - 1], edges[index]
                fraction = min(1.0, max(0.0, (rank - seen) / count))
                found.append(low * (high / low) ** fraction if low > 0 else low + (high - low) * fraction)
        seen += count
    return tuple(found) + (edges[-1],) * (len(qs) - len(found))
