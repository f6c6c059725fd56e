import os
import tempfile
from pathlib import Path

os.environ.setdefault('HF_HUB_OFFLINE', '1')  # no hub here: fail fast instead of retrying
# the text-embedding cache of the tests lives and dies with the session
os.environ.setdefault('SEGEARTH_OV_TEXT_CACHE', tempfile.mkdtemp(prefix='segearth_ov_text_'))

import pytest  # noqa: E402
import torch  # noqa: E402
from mmengine.registry import init_default_scope  # noqa: E402

import segearth_ov  # noqa: E402,F401  (compat shim + registration before mmseg imports)

init_default_scope('mmseg')  # what a config's default_scope does for the Runner

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get('SEGEARTH_OV_SHARED', REPO.parent / 'shared'))
SHARED_REASON = f'real assets folder {SHARED} is absent (set SEGEARTH_OV_SHARED to point at it)'


def free_port() -> int:
    """A TCP port nobody listens on, for a torchrun rendezvous."""
    import socket
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def shared_path(*parts: str) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f'{SHARED_REASON}: missing {path}')
    return path


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


class RandomClipMemo:
    """``open_clip.create_model`` for random weights, memoised on its arguments and on the
    CPU generator's state. A repeated call returns a deep copy of what the first one built
    and leaves the generator where that call left it: the same model and the same random
    stream afterwards as a fresh build, without the random initialisation (0.5 s of CPU for
    ViT-S-16, 1.3 s for ViT-B-16; the suite builds about 170, mostly right after the seed
    above). Calls that load weights (``pretrained`` set) always run."""

    def __init__(self, create_model, size: int = 3):
        self.create_model, self.size, self.built = create_model, size, {}

    def __call__(self, name, *args, **kwargs):
        if args or kwargs.get('pretrained') is not None:
            return self.create_model(name, *args, **kwargs)
        import copy
        import hashlib
        state = torch.random.get_rng_state()
        key = (name, repr(sorted(kwargs.items())),
               hashlib.sha1(state.numpy().tobytes()).hexdigest())
        if key not in self.built:
            model = self.create_model(name, **kwargs)
            if len(self.built) >= self.size:  # the oldest goes
                del self.built[next(iter(self.built))]
            self.built[key] = copy.deepcopy(model), torch.random.get_rng_state()
            return model
        model, after = self.built[key]
        torch.random.set_rng_state(after)
        return copy.deepcopy(model)


@pytest.fixture(scope='session', autouse=True)
def _random_clip_memo():
    import open_clip
    memo = RandomClipMemo(open_clip.factory.create_model)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(open_clip, 'create_model', memo)
        patch.setattr(open_clip.factory, 'create_model', memo)
        yield memo


@pytest.fixture(scope='session')
def small_clip():
    """ViT-S-16 with random weights (same block structure as ViT-B-16, 4x cheaper)."""
    from segearth_ov.weights import build_clip
    torch.manual_seed(0)
    return build_clip('ViT-S-16', None)


@pytest.fixture(scope='session')
def vit_b16():
    from segearth_ov.weights import build_clip
    torch.manual_seed(0)
    return build_clip('ViT-B-16', None)


def small_segmentor(**kwargs):
    """SegEarthOV on ViT-S-16 with random weights and one prompt template."""
    from segearth_ov.models import SegEarthOV
    cfg = dict(clip=dict(arch='ViT-S-16', pretrained=None), classes=['road', 'building,roof',
                                                                     'tree', 'water'],
               prompt_templates=['a satellite photo of {}.'], upsampler=None)
    cfg.update(kwargs)
    torch.manual_seed(0)
    return SegEarthOV(**cfg).eval()


def potsdam_batch(model, rows: int, cols: int):
    """The top-left ``rows x cols`` of a real labelled Potsdam tile, through the model's
    own data preprocessor: ``[1, 3, rows, cols]``."""
    import numpy as np
    from PIL import Image
    tile = shared_path('rs_samples', 'potsdam', 'img_dir', '2_10_0_0_512_512.png')
    rgb = np.asarray(Image.open(tile).convert('RGB'))[:rows, :cols]
    return model.data_preprocessor(dict(inputs=[torch.from_numpy(
        np.ascontiguousarray(rgb[..., ::-1])).permute(2, 0, 1)]))['inputs']


def feature_path(upsampler):
    """Cosine logits the direct way, for the segmentor to call instead of the fast path:
    the upsampled features built and normalised, each window's kernels from its crop."""
    import torch.nn.functional as F

    def cosine_logits(source, guidance, text, kernels=None):
        features = F.normalize(upsampler(source, guidance).float(), dim=1)
        return torch.einsum('bdhw,qd->bqhw', features, text)
    return cosine_logits


def assert_same_segmentation(fast, slow):
    """Two ``SegDataSample`` of one image: class probabilities within 1e-5, labels equal
    except where the two best classes tie within 1e-5."""
    p_fast, p_slow = fast.seg_logits.data, slow.seg_logits.data
    assert (p_fast - p_slow).abs().max() <= 1e-5
    top2 = p_slow.topk(2, dim=0).values
    differ = fast.pred_sem_seg.data[0] != slow.pred_sem_seg.data[0]
    assert ((top2[0] - top2[1])[differ] <= 1e-5).all()  # only exact ties may differ


PREDICT_CLASSES = ['building,roof', 'road', 'water', 'tree']


@pytest.fixture(scope='module')
def segmenter():
    """OpenVocabSegmenter on ViT-S-16 with random weights, one template, small tiles."""
    from segearth_ov.apis import OpenVocabSegmenter
    torch.manual_seed(0)
    return OpenVocabSegmenter(PREDICT_CLASSES, clip='ViT-S-16', pretrained='none',
                              upsampler='none', device='cpu',
                              prompt_templates=['a satellite photo of {}.'], tile=128,
                              overlap=32, batch_size=3)
