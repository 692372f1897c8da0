"""The accuracy gate: thresholds, and a broken variant (weights zeroed) is rejected and its file removed."""

from dataclasses import replace
from pathlib import Path

import pytest

from compression import compress_to_directory, pipeline
from compression.evaluate import OutputFidelity
from compression.gate import gate_reasons
from compression.settings import CompressionSettings, GateThresholds, InvalidSettingsError
from compression.variants import BY_NAME
from tests.compression import models
from tests.compression.conftest import FAST


def test_zeroed_weights_variant_is_rejected(mlp_model: Path, mlp_data: tuple[Path, Path], tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(ctx, out: Path) -> None:
        models.zero_weights(ctx.source.path, out)

    spec = replace(BY_NAME["onnx-fp16"], name="onnx-broken", build=broken)
    monkeypatch.setattr(pipeline, "select_variants", lambda source, requested: (BY_NAME["onnx-fp32"], spec))
    calibration, validation = mlp_data
    result = compress_to_directory(mlp_model, calibration, tmp_path / "out", validation=validation, settings=FAST)

    broken_entry = result.report["variants"][1]
    assert broken_entry["name"] == "onnx-broken" and broken_entry["gate"] == "rejected"
    assert broken_entry["top1_agreement"] < 0.5
    assert any("top-1 agreement" in reason for reason in broken_entry["reasons"])
    assert any("accuracy drop" in reason for reason in broken_entry["reasons"])
    assert result.report["release_order"] == ["onnx-fp32"]
    assert [v.name for v in result.release_variants] == ["onnx-fp32"]
    assert sorted(path.name for path in (tmp_path / "out" / "variants").iterdir()) == ["onnx-fp32.onnx"]


def test_a_variant_that_fails_to_build_is_rejected_not_fatal(mlp_model: Path, mlp_data: tuple[Path, Path],
                                                             tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def crash(ctx, out: Path) -> None:
        out.write_bytes(b"half written")
        raise RuntimeError("converter bug")

    spec = replace(BY_NAME["onnx-fp16"], build=crash)
    monkeypatch.setattr(pipeline, "select_variants", lambda source, requested: (spec, BY_NAME["onnx-fp32"]))
    result = compress_to_directory(mlp_model, mlp_data[0], tmp_path / "out", settings=FAST)
    assert result.report["variants"][0]["gate"] == "rejected"
    assert "RuntimeError: converter bug" in result.report["variants"][0]["reasons"][0]
    assert not (tmp_path / "out" / "variants" / "onnx-fp16.onnx").exists()
    assert result.report["variants"][1]["gate"] == "passed"


def test_gate_reasons_per_threshold() -> None:
    strict = GateThresholds(min_top1_agreement=0.995, max_accuracy_drop=0.005, min_sqnr_db=30.0)
    clean = [OutputFidelity("y", 0.01, 0.001, 40.0, None)]
    assert gate_reasons(strict, top1_agreement=1.0, accuracy_drop=0.0, relative_error=None, outputs=clean) == []
    reasons = gate_reasons(strict, top1_agreement=0.99, accuracy_drop=0.006, relative_error=None,
                           outputs=[OutputFidelity("y", 0.1, 0.01, 20.0, None)])
    assert len(reasons) == 3 and "top-1" in reasons[0] and "accuracy drop" in reasons[1] and "SQNR" in reasons[2]
    assert gate_reasons(GateThresholds(), top1_agreement=None, accuracy_drop=None, relative_error=0.2,
                        outputs=clean) == ["relative error 0.2000 > 0.0500"]
    assert "NaN" in gate_reasons(GateThresholds(), top1_agreement=None, accuracy_drop=None, relative_error=None,
                                 outputs=[OutputFidelity("y", float("inf"), float("inf"), None, None)])[0]
    # exactly at the default thresholds passes
    assert gate_reasons(GateThresholds(), top1_agreement=0.99, accuracy_drop=0.01, relative_error=None,
                        outputs=clean) == []


def test_settings_validate_and_round_trip() -> None:
    settings = CompressionSettings(variants=("onnx-fp32",), calibration_method="entropy",
                                   thresholds=GateThresholds(min_top1_agreement=0.95))
    assert CompressionSettings.from_dict(settings.to_dict()) == settings
    with pytest.raises(InvalidSettingsError, match="calibration_method"):
        CompressionSettings(calibration_method="kl")
    with pytest.raises(InvalidSettingsError, match="unknown compression settings"):
        CompressionSettings.from_dict({"bogus": 1})
    with pytest.raises(InvalidSettingsError, match="min_top1_agreement"):
        GateThresholds(min_top1_agreement=99)
