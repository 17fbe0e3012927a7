"""Zero-shot classification and image-text retrieval on embeddings we control."""

import pytest
import torch
import torch.nn.functional as F

from hf_contrastive.evaluation.zero_shot import (
    ImageTextRetrievalEvaluator,
    ZeroShotClassificationEvaluator,
    zero_shot_classifier,
)

# Prompts of 3 classes in 2-d: class c's prompts average (after normalising) to a known direction.
VECTORS = {
    "a zero": [1.0, 0.0],
    "the zero": [3.0, 0.0],
    "a one": [0.0, 1.0],
    "the one": [0.0, 5.0],
    "a two": [-1.0, 0.0],
    "the two": [0.0, -1.0],  # class 2 = normalize(mean([-1, 0], [0, -1])) = [-0.707, -0.707]
}
PROMPTS = [["a zero", "the zero"], ["a one", "the one"], ["a two", "the two"]]


def embed(column: str, values: list) -> torch.Tensor:
    """Texts map through VECTORS; "images" are already 2-d vectors."""
    if column == "text":
        return torch.tensor([VECTORS[value] for value in values])
    return torch.tensor(values, dtype=torch.float32)


def test_class_embedding_is_the_renormalised_mean_of_normalised_prompts():
    classifier = zero_shot_classifier(embed, PROMPTS)
    expected = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-(0.5**0.5), -(0.5**0.5)]])
    torch.testing.assert_close(classifier, expected)


def test_known_top1_top2_and_per_class_accuracy():
    # Nearest class by cosine: [2,0.1]->0, [0.1,2]->1, [-1,-1.1]->2, [0.2,1]->1 (label 0: miss, 2nd best is 0),
    # [-1,0.2]->2 (label 1: miss; its 2nd best is 1 with cos 0.196 vs class 0's -0.98).
    images = [[2.0, 0.1], [0.1, 2.0], [-1.0, -1.1], [0.2, 1.0], [-1.0, 0.2]]
    labels = [0, 1, 2, 0, 1]
    evaluator = ZeroShotClassificationEvaluator(images, labels, PROMPTS, top_k=(1, 2, 5), per_class=True)
    metrics = evaluator(embed)
    assert metrics["zero_shot_top1_accuracy"] == pytest.approx(3 / 5)
    assert metrics["zero_shot_top2_accuracy"] == pytest.approx(1.0)
    assert "zero_shot_top5_accuracy" not in metrics  # more than the 3 classes
    assert metrics["zero_shot_class_0_accuracy"] == pytest.approx(0.5)
    assert metrics["zero_shot_class_1_accuracy"] == pytest.approx(0.5)
    assert metrics["zero_shot_class_2_accuracy"] == pytest.approx(1.0)


def test_retrieval_recall_of_known_pairs():
    texts = ["a zero", "a one", "a two"]
    # image 0 -> closest text 0; image 1 closest text 0 (its pair "a one" 2nd); image 2 closest text 2.
    images = [[1.0, 0.0], [1.0, 0.5], [-1.0, -0.2]]
    metrics = ImageTextRetrievalEvaluator(images, texts, ks=(1, 2))(embed)
    assert metrics["retrieval_image_to_text_recall@1"] == pytest.approx(2 / 3)
    assert metrics["retrieval_image_to_text_recall@2"] == pytest.approx(1.0)
    # text 0 -> image 0 (cos 1 vs 0.894); text 1 "a one" -> image 1 (0.447); text 2 "a two" -> image 2.
    assert metrics["retrieval_text_to_image_recall@1"] == pytest.approx(1.0)
    scores = F.normalize(torch.tensor(images), dim=-1) @ F.normalize(embed("text", texts), dim=-1).T
    assert scores.argmax(dim=1).tolist() == [0, 0, 2]


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="differ in length"):
        ZeroShotClassificationEvaluator([[1.0, 0.0]], [0, 1], PROMPTS)
    with pytest.raises(ValueError, match="labels must index class_prompts"):
        ZeroShotClassificationEvaluator([[1.0, 0.0]], [3], PROMPTS)
    with pytest.raises(ValueError, match="every class at least one prompt"):
        zero_shot_classifier(embed, [["a zero"], []])
    with pytest.raises(ValueError, match="must be pairs"):
        ImageTextRetrievalEvaluator([[1.0, 0.0]], ["a zero", "a one"])
