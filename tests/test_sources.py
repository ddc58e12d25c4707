"""Feature sources: names, cards for every kind of weights, and the extractor each one gets."""

import hashlib

import pytest
import torch

from hue import config, models, sources


def test_names_parse_and_cross():
    s = sources.parse("efficientnet_b0-hue")
    assert (s.backbone, s.weights, s.name, s.trained) == ("efficientnet_b0", "hue", "efficientnet_b0-hue", True)
    assert not sources.parse("resnet18-imagenet").trained
    with pytest.raises(sources.SourceError, match="is not <backbone>-<weights>"):
        sources.parse("resnet18")
    params = config.build("extract", {"backbones": ["resnet18"], "weights": ["random", "hue"]})
    assert sources.names(params) == ["resnet18-random", "resnet18-hue"]


def test_cards_identify_the_weights(tmp_path):
    params = config.build("extract", {"weights": ["random", "mine"], "seed": 3,
                                      "weight_files": {"mine": str(tmp_path / "w.pt")}})
    assert sources.card(sources.parse("resnet18-random"), params)["id"] == "random:seed=3"
    assert sources.card(sources.parse("resnet18-hue"), params) == {
        "source": "resnet18-hue", "backbone": "resnet18", "weights": "hue", "kind": "trained", "id": "trained:hue"}
    with pytest.raises(sources.SourceError, match="extract.weight_files.mine = .*no such file"):
        sources.card(sources.parse("resnet18-mine"), params)
    net, _ = models.build("resnet18", "random", seed=1)
    torch.save(net.state_dict(), tmp_path / "w.pt")
    card = sources.card(sources.parse("resnet18-mine"), params)
    assert card["id"] == "sha256:" + hashlib.sha256((tmp_path / "w.pt").read_bytes()).hexdigest()
    sources.snapshot_weight_file("mine", params, tmp_path / "snap.json")
    assert card["id"].endswith(__import__("json").loads((tmp_path / "snap.json").read_text())["sha256"])


def test_extractors_of_pretrained_file_and_trained_sources(tmp_path):
    from hue.models import HueNet

    params = config.build("extract", {"weights": ["mine", "hue"], "layer": "layer3",
                                      "weight_files": {"mine": str(tmp_path / "w.pt")}})
    src, _ = models.build("resnet18", "random", seed=5)
    torch.save(src.state_dict(), tmp_path / "w.pt")
    net, weights_id = sources.extractor(sources.parse("resnet18-mine"), params, tmp_path, None)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert net(x).shape == (1, 256, 4, 4) and weights_id.startswith("sha256:")
    trained = HueNet("resnet18", 4)
    torch.save({"arch": "resnet18", "n_classes": 4, "model": trained.state_dict()}, tmp_path / "fold2.pt")
    net, _ = sources.extractor(sources.parse("resnet18-hue"), params, tmp_path, 2)
    with torch.no_grad():
        body = trained.body.eval()
        expected = body.layer3(body.layer2(body.layer1(body.maxpool(body.relu(body.bn1(body.conv1(x)))))))
        assert torch.allclose(net(x), expected, atol=1e-5)  # the body at the tapped node: no classifier, no hue head
    with pytest.raises(models.ModelError, match="fold4.pt not found: the train stages write it"):
        sources.extractor(sources.parse("resnet18-hue"), params, tmp_path, 4)
