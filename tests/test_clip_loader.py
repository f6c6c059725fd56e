"""CLIP weights: local files, tags offline, and the errors users hit."""
import open_clip
import pytest
import torch

from segearth_ov.models.clip_loader import build_clip


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
    with pytest.raises(RuntimeError) as info:
        build_clip('ViT-B-16', 'openai', cache_dir=str(tmp_path))
    message = str(info.value)
    assert 'ViT-B-16/openai' in message and str(tmp_path) in message
    assert "pretrained='/path/to/ViT-B-16.pt'" in message and 'ViT-B-16-quickgelu' in message
    assert 'weights file (ViT-B-16.pt)' in message
