"""GBA, synonym max, background threshold: hand-computed small cases."""
import torch

from segearth_ov.models.global_bias import alleviate_global_bias
from segearth_ov.models.postprocess import queries_to_classes, threshold_to_background


def test_global_bias_hand_computed():
    text = torch.tensor([[1.0, 0.0], [0.0, 1.0]])          # two queries, D = 2
    cls = torch.tensor([[3.0, 4.0]])                        # c_hat = (0.6, 0.8)
    logits = torch.tensor([[[[0.5]], [[0.25]]]])            # [1, 2, 1, 1]
    out = alleviate_global_bias(logits, cls, text, -0.3)
    expected = torch.tensor([0.5 - 0.3 * 0.6, 0.25 - 0.3 * 0.8]).view(1, 2, 1, 1)
    torch.testing.assert_close(out, expected)
    assert alleviate_global_bias(logits, cls, text, 0.0) is logits


def test_global_bias_equals_shifted_patch_feature():
    patches = torch.nn.functional.normalize(torch.randn(2, 5, 3, 3, dtype=torch.float64), dim=1)
    cls = torch.randn(2, 5, dtype=torch.float64)
    text = torch.nn.functional.normalize(torch.randn(4, 5, dtype=torch.float64), dim=1)
    logits = torch.einsum('bdhw,qd->bqhw', patches, text)
    out = alleviate_global_bias(logits, cls, text, -0.3)
    shifted = patches - 0.3 * torch.nn.functional.normalize(cls, dim=1)[:, :, None, None]
    torch.testing.assert_close(out, torch.einsum('bdhw,qd->bqhw', shifted, text))


def test_synonym_max_and_threshold_hand_computed():
    # queries: class0 <- q0, class1 <- q1, q2 (synonyms), class2 <- q3; two pixels
    probs = torch.tensor([[0.10, 0.40],
                          [0.20, 0.05],
                          [0.50, 0.15],
                          [0.20, 0.40]]).view(4, 1, 2)
    classes = queries_to_classes(probs, [0, 1, 1, 2], 3)
    torch.testing.assert_close(classes, torch.tensor([[0.10, 0.40], [0.50, 0.15],
                                                      [0.20, 0.40]]).view(3, 1, 2))
    pred = threshold_to_background(classes, prob_thd=0.45, bg_idx=2)
    assert pred.tolist() == [[1, 2]]   # pixel 1 tops at 0.40 < 0.45 -> background
    assert threshold_to_background(classes, 0.0, 2).tolist() == [[1, 0]]
