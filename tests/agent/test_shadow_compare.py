"""How shadow answers are compared: top-1 for classifiers, mean absolute difference otherwise."""

import numpy as np
import pytest

from agent.errors import ShadowError
from agent.shadow_compare import Agreement, compare_outputs


def test_a_label_output_is_compared_row_by_row() -> None:
    serving = {"label": np.array([1, 2, 3, 4]), "probabilities": np.full((4, 10), 0.1, dtype=np.float32)}
    candidate = {"label": np.array([1, 2, 0, 4]), "probabilities": np.full((4, 10), 0.1, dtype=np.float32)}
    comparison = compare_outputs(serving, candidate)
    assert (comparison.classifier, comparison.samples, comparison.agreed) == (True, 4, 3)


def test_probability_rows_are_compared_on_their_arg_max() -> None:
    serving = {"scores": np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]], dtype=np.float32)}
    candidate = {"scores": np.array([[0.6, 0.3, 0.1], [0.5, 0.4, 0.1]], dtype=np.float32)}
    comparison = compare_outputs(serving, candidate)
    assert (comparison.classifier, comparison.samples, comparison.agreed) == (True, 2, 1)


def test_other_outputs_are_compared_by_absolute_difference() -> None:
    serving = {"y": np.array([[1.0, 2.0], [3.0, 4.0]], dtype=np.float32)}
    candidate = {"y": np.array([[1.5, 2.0], [3.0, 3.0]], dtype=np.float32)}
    comparison = compare_outputs(serving, candidate)
    assert comparison.classifier is False
    assert comparison.samples == 2 and comparison.elements == 4 and comparison.agreed == 0
    assert comparison.abs_diff_sum == pytest.approx(1.5)
    close = compare_outputs(serving, {"y": serving["y"] + 1e-6})
    assert close.agreed == 2


def test_rows_that_do_not_sum_to_one_are_not_probabilities() -> None:
    serving = {"y": np.array([[0.9, 0.9], [0.1, 0.1]], dtype=np.float32)}
    assert compare_outputs(serving, serving).classifier is False


@pytest.mark.parametrize("candidate", [{"other": np.array([1])}, {"label": np.array([[1, 2], [3, 4]]).T[:1]}])
def test_incomparable_answers_raise(candidate: dict) -> None:
    with pytest.raises(ShadowError):
        compare_outputs({"label": np.array([1, 2])}, candidate)


def test_regression_shapes_must_match() -> None:
    with pytest.raises(ShadowError, match="shapes"):
        compare_outputs({"y": np.zeros((2, 3))}, {"y": np.zeros((2, 4))})


def test_agreement_accumulates_over_requests() -> None:
    agreement = Agreement()
    assert agreement.agreement is None and agreement.mean_abs_diff is None
    agreement.add(compare_outputs({"label": np.array([1, 2])}, {"label": np.array([1, 2])}))
    agreement.add(compare_outputs({"label": np.array([1, 2])}, {"label": np.array([0, 2])}))
    assert agreement.compared == 4 and agreement.agreement == pytest.approx(0.75)
    assert agreement.mean_abs_diff is None

    regression = Agreement()
    regression.add(compare_outputs({"y": np.array([[1.0, 1.0]])}, {"y": np.array([[2.0, 1.0]])}))
    regression.add(compare_outputs({"y": np.array([[1.0, 1.0]])}, {"y": np.array([[1.0, 1.0]])}))
    assert regression.agreement == pytest.approx(0.5) and regression.mean_abs_diff == pytest.approx(0.25)
