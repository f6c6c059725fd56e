"""Upsampler kernels shared by overlapping sliding windows equal each window's own."""
import pytest
import torch

from conftest import assert_same_segmentation, feature_path, potsdam_batch, small_segmentor
from segearth_ov.geometry import window_grid
from segearth_ov.models import shared_kernels
from segearth_ov.models.shared_kernels import SharedKernels
from segearth_ov.models.upsamplers import JBUOne, JBUStack


def perturbed(upsampler):
    with torch.no_grad():
        for p in upsampler.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return upsampler.double().eval()


@pytest.mark.parametrize('cls', [JBUOne, JBUStack])
@pytest.mark.parametrize('batch,size', [(2, (224, 224)), (1, (250, 191))])
def test_every_window_gets_its_own_kernels(cls, batch, size, monkeypatch):
    """float64, so only the order of sums may differ: every step of every window of 112
    every 56 (inner, at borders, and at 250 x 191 windows whose offsets are off the blocks
    of some steps) equals the kernels the upsampler computes from the window's crop alone,
    and the bands held stay a few per step while the windows are visited in order."""
    up = perturbed(cls(feat_dim=8))
    image = torch.randn(batch, 3, *size, dtype=torch.float64)
    shared = SharedKernels(up, image, (7, 7), (112, 112), 56)
    assert [s is not None for s in shared.steps] == \
        ([False, False, False, True] if cls is JBUOne else [False, False, True, True])
    held = []
    original = shared_kernels.StepBands.window

    def counting(self, *args):
        out = original(self, *args)
        held.append(len(self.bands))
        return out
    monkeypatch.setattr(shared_kernels.StepBands, 'window', counting)
    with torch.no_grad():
        for index in range(batch):
            for y1, y2, x1, x2 in window_grid(*size, 112, 56):
                expected = up.step_kernels((7, 7), image[index:index + 1, :, y1:y2, x1:x2])
                got = shared.window(index, (y1, y2, x1, x2))
                for a, b in zip(got, expected):
                    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert held and max(held) <= 3


def test_bound_kernels_cover_a_batch_of_windows():
    up = perturbed(JBUOne(feat_dim=8))
    image = torch.randn(1, 3, 168, 224, dtype=torch.float64)
    jobs = [(0, w) for w in window_grid(168, 224, 112, 56)][1:4]
    with torch.no_grad():
        kernels = SharedKernels(up, image, (7, 7), (112, 112), 56).bind(jobs)(0, 3)
        crops = torch.cat([image[:, :, y1:y2, x1:x2] for _, (y1, y2, x1, x2) in jobs])
        for a, b in zip(kernels, up.step_kernels((7, 7), crops)):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('kind,lam,crop', [('jbu_one', -0.3, 224), ('jbu_stack', 0.0, 224),
                                           ('jbu_one', -0.3, 0)])
def test_segmentor_with_shared_kernels_equals_the_feature_path(kind, lam, crop):
    """A real tile of 336 x 336 (four windows, so kernels are shared) or the whole image:
    the class probabilities agree with the feature path to 1e-5, labels except at ties."""
    model = small_segmentor(cls_token_lambda=lam, upsampler=dict(type=kind), slide_crop=crop)
    with torch.no_grad():
        for p in model.upsampler.parameters():
            p.add_(0.05 * torch.randn_like(p))
    batch = potsdam_batch(model, 336, 336)
    views = model.view_features(batch)
    assert all((features.kernels is not None) == (crop > 0) for _, features in views)
    fast = model.predict(batch)[0]
    model.upsampler.cosine_logits = feature_path(model.upsampler)
    assert_same_segmentation(fast, model.predict(batch)[0])
