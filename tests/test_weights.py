"""CLIP weights: local files, tags offline, OpenAI's QuickGELU rule, and the errors users hit."""
import shutil
import subprocess

import numpy as np
import open_clip
import pytest
import torch

from segearth_ov.weights import build_clip, download_simfeatup, git_blob_sha1, resolve_clip


@pytest.fixture(scope='module')
def saved_small(tmp_path_factory):
    torch.manual_seed(1)
    model = open_clip.create_model('ViT-S-32')
    path = tmp_path_factory.mktemp('ckpt') / 'small.pt'
    torch.save({'state_dict': {'module.' + k: v for k, v in model.state_dict().items()}}, path)
    return model, path


def test_local_checkpoint_loads_with_wrappers_stripped(saved_small):
    model, path = saved_small
    loaded, tokenizer = build_clip('ViT-S-32', str(path))
    for key, value in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value)
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    assert tokenizer(['a road']).shape == (1, 77)


def test_truncated_clip_checkpoint(saved_small, tmp_path):
    data = saved_small[1].read_bytes()
    cut = tmp_path / 'cut.pt'
    cut.write_bytes(data[:len(data) // 3])
    with pytest.raises(ValueError, match='cut.pt cannot be read'):
        build_clip('ViT-S-32', str(cut))


def test_checkpoint_of_another_arch_lists_keys(saved_small):
    with pytest.raises(ValueError, match="does not fit arch 'ViT-S-16'"):
        build_clip('ViT-S-16', str(saved_small[1]))


def test_wrong_keys_listed(saved_small, tmp_path):
    state = torch.load(saved_small[1], weights_only=True)['state_dict']
    state['module.visual.extra'] = torch.zeros(1)
    del state['module.logit_scale']
    path = tmp_path / 'keys.pt'
    torch.save(state, path)
    with pytest.raises(ValueError, match=r'1 missing key\(s\): logit_scale; 1 unexpected '
                                         r'key\(s\): visual.extra'):
        build_clip('ViT-S-32', str(path))


def test_missing_local_file_and_unknown_names(tmp_path):
    with pytest.raises(FileNotFoundError, match='CLIP checkpoint not found: .*none.pt'):
        build_clip('ViT-B-16', str(tmp_path / 'none.pt'))
    with pytest.raises(ValueError, match="unknown open_clip architecture 'ViT-Q-16'"):
        build_clip('ViT-Q-16', None)
    with pytest.raises(ValueError, match="no pretrained tag 'openia'.*openai"):
        build_clip('ViT-B-16', 'openia')


def test_tag_without_network_says_what_to_download(monkeypatch, tmp_path):
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    with pytest.raises(FileNotFoundError) as info:
        build_clip('ViT-B-16', 'openai', cache_dir=str(tmp_path))
    message = str(info.value)
    assert 'ViT-B-16/openai' in message and str(tmp_path) in message
    assert "clip=dict(arch='ViT-B-16', pretrained='/path/to/ViT-B-16.pt')" in message
    assert 'weights file (ViT-B-16.pt)' in message


# --- OpenAI-format weights build with QuickGELU, whatever the arch spelling -----------------

@pytest.fixture(scope='module')
def openai_like(tmp_path_factory):
    """Seeded random ViT-B-16 QuickGELU weights: the reference model, an open_clip state
    dict, OpenAI's state-dict layout (with its metadata keys) and a traced TorchScript
    archive, as OpenAI ships ``ViT-B-16.pt``."""
    torch.manual_seed(3)
    reference = open_clip.create_model('ViT-B-16-quickgelu').eval()
    folder = tmp_path_factory.mktemp('openai')
    state = reference.state_dict()
    torch.save(state, folder / 'open_clip_model.pt')
    torch.save({**state, 'input_resolution': torch.tensor(224),
                'context_length': torch.tensor(77), 'vocab_size': torch.tensor(49408)},
               folder / 'openai_state.pt')
    image = torch.randn(2, 3, 224, 224)
    text = open_clip.get_tokenizer('ViT-B-16')(['a road', 'a building with a red roof'])
    scripted = torch.jit.trace(reference, (image[:1], text[:1]), strict=False,
                               check_trace=False)
    torch.jit.save(scripted, str(folder / 'ViT-B-16.pt'))
    with torch.no_grad():
        expected = reference.encode_image(image), reference.encode_text(text)
    return folder, image, text, expected


def _towers(model, image, text):
    with torch.no_grad():
        return model.encode_image(image), model.encode_text(text)


def _assert_towers(model, openai_like, same=True):
    _, image, text, (image_ref, text_ref) = openai_like
    image_out, text_out = _towers(model, image, text)
    if same:
        torch.testing.assert_close(image_out, image_ref, rtol=0, atol=1e-5)
        torch.testing.assert_close(text_out, text_ref, rtol=0, atol=1e-5)
    else:  # GELU instead of QuickGELU visibly changes both towers
        assert (image_out - image_ref).abs().max() > 1e-3
        assert (text_out - text_ref).abs().max() > 1e-3


@pytest.mark.parametrize('arch', ['ViT-B-16', 'ViT-B-16-quickgelu'])
def test_openai_tag_builds_quickgelu(openai_like, monkeypatch, arch):
    """The config route (pretrained='openai') with the download redirected to a local file
    computes what ViT-B-16-quickgelu computes with the same weights."""
    path = str(openai_like[0] / 'open_clip_model.pt')
    monkeypatch.setattr(open_clip.factory, 'download_pretrained', lambda *a, **k: path)
    model, _ = build_clip(arch, 'openai')
    _assert_towers(model, openai_like)


@pytest.mark.parametrize('name', ['ViT-B-16.pt', 'openai_state.pt'])
@pytest.mark.parametrize('arch', ['ViT-B-16', 'ViT-B-16-quickgelu'])
def test_openai_files_build_quickgelu(openai_like, name, arch):
    """OpenAI's TorchScript archive and an OpenAI state dict load strictly, with QuickGELU."""
    model, _ = build_clip(arch, str(openai_like[0] / name))
    _assert_towers(model, openai_like)


def test_plain_state_dict_keeps_the_arch_activation(openai_like):
    """Without OpenAI's markers a file follows the arch name; forcing GELU shows the check
    above can fail."""
    path = str(openai_like[0] / 'open_clip_model.pt')
    _assert_towers(build_clip('ViT-B-16-quickgelu', path)[0], openai_like)
    _assert_towers(build_clip('ViT-B-16', path)[0], openai_like, same=False)
    _assert_towers(build_clip('ViT-B-16', str(openai_like[0] / 'ViT-B-16.pt'),
                              quick_gelu=False)[0], openai_like, same=False)


def test_torchscript_of_another_arch_and_truncated(openai_like, tmp_path):
    with pytest.raises(ValueError, match="ViT-B-16.pt does not fit arch 'ViT-B-32'"):
        build_clip('ViT-B-32', str(openai_like[0] / 'ViT-B-16.pt'))
    data = (openai_like[0] / 'ViT-B-16.pt').read_bytes()
    cut = tmp_path / 'ViT-B-16.pt'
    cut.write_bytes(data[:len(data) // 2])
    with pytest.raises(ValueError, match='ViT-B-16.pt cannot be read'):
        build_clip('ViT-B-16', str(cut))


# --- known files and downloads ----------------------------------------------------------

def test_git_blob_hash_matches_git(tmp_path):
    if shutil.which('git') is None:
        pytest.skip('git is not installed')
    data = np.random.default_rng(4).bytes(5000)
    (tmp_path / 'blob').write_bytes(data)
    expected = subprocess.run(['git', 'hash-object', str(tmp_path / 'blob')],
                              capture_output=True, text=True, check=True).stdout.strip()
    assert git_blob_sha1(data) == expected


def test_download_checks_the_blob_hash(tmp_path):
    source = tmp_path / 'served.ckpt'
    source.write_bytes(b'checkpoint bytes')
    dest = tmp_path / 'checkpoints' / 'x.ckpt'
    with pytest.raises(ValueError, match='git blob hash .* expected d40f0083'):
        download_simfeatup(dest, source.as_uri())
    assert not dest.exists() and not list(tmp_path.glob('checkpoints/.*'))
    good = git_blob_sha1(b'checkpoint bytes')
    assert download_simfeatup(dest, source.as_uri(), good) == dest
    assert dest.read_bytes() == b'checkpoint bytes'
    with pytest.raises(ConnectionError, match='save it as'):
        download_simfeatup(tmp_path / 'y.ckpt', (tmp_path / 'absent').as_uri())


def test_missing_clip_weights_say_what_to_do(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match='download-weights.*checkpoints/ViT-B-16.pt'):
        resolve_clip('ViT-B-16', 'auto')
    assert resolve_clip('ViT-B-16', 'none') == (dict(arch='ViT-B-16', pretrained=None), None)


def test_none_means_no_weights_for_every_option():
    from segearth_ov.weights import no_weights, resolve_clip, resolve_upsampler
    for word in (None, 'none', 'None', ' NONE '):
        assert no_weights(word)
        assert resolve_clip('ViT-B-16', word) == (dict(arch='ViT-B-16', pretrained=None), None)
        assert resolve_upsampler(word, None, 16) is None
    for word in ('openai', 'none.pt', 'auto'):
        assert not no_weights(word)


def test_the_suites_random_clip_memo_is_a_fresh_build(_random_clip_memo):
    """conftest's memo of random builds: each call gives the model and the generator state
    that open_clip itself gives, and a model it handed out can change without touching it."""
    torch.manual_seed(3)
    fresh = _random_clip_memo.create_model('ViT-S-32')
    after = torch.random.get_rng_state()
    for _ in range(2):
        torch.manual_seed(3)
        model = open_clip.create_model('ViT-S-32')
        assert torch.equal(torch.random.get_rng_state(), after)
        for key, value in fresh.state_dict().items():
            assert torch.equal(model.state_dict()[key], value), key
        model.logit_scale.data.fill_(0.0)  # must not reach the next call's copy
    torch.manual_seed(4)  # another state, another model
    assert not torch.equal(open_clip.create_model('ViT-S-32').visual.conv1.weight,
                           fresh.visual.conv1.weight)
