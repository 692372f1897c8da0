"""The accuracy gate: a variant reaches a release only if it stays provably close to the original."""

import math

from compression.evaluate import OutputFidelity
from compression.settings import GateThresholds


def gate_reasons(thresholds: GateThresholds, *, top1_agreement: float | None, accuracy_drop: float | None,
                 relative_error: float | None, outputs: list[OutputFidelity]) -> list[str]:
    """Why the variant fails the gate; an empty list means it passes."""
    reasons = []
    for output in outputs:
        if output.max_abs_error is not None and not math.isfinite(output.max_abs_error):
            reasons.append(f"output {output.name!r} has NaN or infinite values")
    if top1_agreement is not None and top1_agreement < thresholds.min_top1_agreement:
        reasons.append(f"top-1 agreement {top1_agreement:.2%} < {thresholds.min_top1_agreement:.2%}")
    if accuracy_drop is not None and accuracy_drop > thresholds.max_accuracy_drop + 1e-12:
        reasons.append(f"accuracy drop {accuracy_drop * 100:.2f} points > {thresholds.max_accuracy_drop * 100:.2f}")
    if relative_error is not None and not relative_error <= thresholds.max_relative_error:
        reasons.append(f"relative error {relative_error:.4f} > {thresholds.max_relative_error:.4f}")
    if thresholds.min_sqnr_db is not None:
        for output in outputs:
            if output.sqnr_db is not None and output.sqnr_db < thresholds.min_sqnr_db:
                reasons.append(f"output {output.name!r} SQNR {output.sqnr_db:.1f} dB < {thresholds.min_sqnr_db:.1f}")
    return reasons
