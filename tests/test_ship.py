"""training.ship: weights, manifest (sha256) and a model card that states what the weights are."""
from __future__ import annotations

import json

import torch

from nullswap_sdk.models import sha256_file
from nullswap_sdk.network import NetworkConfig, NullSwapNet, save_network
from training import ship
from training.config import TrainConfig, apply_overrides


def test_ship_writes_weights_manifest_and_a_truthful_card(tmp_path, monkeypatch):
    models = tmp_path / "models"
    models.mkdir()
    monkeypatch.setattr(ship, "MODELS_DIR", models)
    run = tmp_path / "run"
    run.mkdir()
    cfg = apply_overrides(TrainConfig(), ["network.luminance=true", "network.texture=1.0", "network.width=8"])
    cfg.save(run / "config.json")
    torch.manual_seed(0)
    net = NullSwapNet(NetworkConfig(luminance=True, texture=1.0, width=8))
    save_network(net, run / "best.safetensors", {"step": 7, "val_cos_sface": 0.8, "val_cos_sface_jpeg75": 0.81,
                                                 "val_cos_faceres": 0.85, "val_cos_faceres_jpeg75": 0.86,
                                                 "val_psnr": 41.7, "val_ssim": 0.99})
    (run / "init.json").write_text(json.dumps({"from": "x/nullswap_net_v1.safetensors", "copied": 286,
                                               "adapted": ["tail.2.weight"], "fresh": []}))
    rec = {"cosine": 0.85, "top1": 0.7, "top1_clean": 0.88, "kept_jpeg75": {"cos": 0.97, "top1": 1.0},
           "kept_resize0.5": {"cos": 0.84, "top1": 0.5}, "attack": ["sface"]}
    lab = tmp_path / "lab.json"
    lab.write_text(json.dumps({"probes": 26, "gallery": 566, "blackbox": {"faceres": rec},
                               "quality": {"psnr_face": 38.5, "ssim_face": 0.98, "ssim_face256": 0.983}}))
    assert ship.main(["--run", str(run), "--file", "net_test", "--lab-report", str(lab)]) == 0
    man = json.loads((models / "manifest.json").read_text())["nullswap-net"]
    assert man["sha256"] == sha256_file(models / "net_test.safetensors") and man["step"] == 7
    card = (models / "net_test.md").read_text()
    assert "one luminance perturbation for R, G and B" in card and "texture weight" in card
    assert "started from `nullswap_net_v1.safetensors`" in card and "286 tensors copied" in card
    assert "| faceres | 0.850 | 0.70 (0.88) | 0.97 | 0.84 |" in card
    assert "p=0.4 per step overall" in card  # effective JPEG probability, not p_jpeg alone
