"""SimFeatUp training on tiny generated images with a small open_clip model, on CPU."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from conftest import REPO, free_port, small_segmentor
from segearth_ov.models.upsamplers import load_upsampler_checkpoint
from segearth_ov.training import TrainConfig, Trainer
from segearth_ov.training.cli import main
from segearth_ov.training.downsampler import AttentionDownsampler, gaussian_blur
from segearth_ov.training.jitter import Jitter, apply_jitter
from segearth_ov.training.losses import uncertainty_loss

SMALL = dict(clip='ViT-S-16', pretrained=None, crop=32, batch_size=2, num_workers=0,
             n_jitters=2)


def make_images(folder, count=6, size=(40, 48)):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for index in range(count):
        sub = folder / ('nested' if index % 2 else '')
        sub.mkdir(exist_ok=True)
        image = rng.integers(0, 255, (*size, 3), dtype=np.uint8)
        Image.fromarray(image).save(sub / f'{index}.png')
    return folder


# ------------------------------------------------------------------------------ pieces
def test_jitter_matches_numpy_pad_crop_and_flip():
    x = torch.randn(1, 2, 6, 7, dtype=torch.float64)
    jitter = Jitter(zoom=1.0, top=3, left=5, flip=True)
    padded = np.pad(x.numpy(), [(0, 0), (0, 0), (4, 4), (4, 4)], mode='reflect')
    expected = padded[..., 3:9, 5:12][..., ::-1]
    np.testing.assert_array_equal(apply_jitter(x, 4, jitter).numpy(), expected)
    zoomed = apply_jitter(x, 4, Jitter(zoom=1.7, top=10, left=2, flip=False))
    assert zoomed.shape == x.shape


def test_gaussian_blur_against_a_float64_convolution():
    x = torch.randn(1, 3, 9, 10, dtype=torch.float64)
    offsets = np.arange(5) - 2.0
    g = np.exp(-offsets ** 2 / 2)
    kernel = np.outer(g, g) / np.outer(g, g).sum()
    padded = np.pad(x.numpy(), [(0, 0), (0, 0), (2, 2), (2, 2)], mode='reflect')
    expected = np.zeros_like(x.numpy())
    for i in range(5):
        for j in range(5):
            expected += kernel[i, j] * padded[..., i:i + 9, j:j + 10]
    np.testing.assert_allclose(gaussian_blur(x).numpy(), expected, atol=1e-12)


def test_attention_downsampler_with_neutral_weights_is_a_mean_of_the_blur():
    down = AttentionDownsampler(4, 4).double()
    with torch.no_grad():
        down.w.zero_()
        down.b.zero_()
    x = torch.randn(2, 4, 8, 12, dtype=torch.float64)
    np.testing.assert_allclose(down(x).detach().numpy(),
                               F.avg_pool2d(gaussian_blur(x), 4).numpy(), atol=1e-12)
    with pytest.raises(ValueError, match='multiple of the kernel'):
        down(torch.randn(1, 4, 6, 8, dtype=torch.float64))


def test_uncertainty_loss_by_hand():
    pred = torch.tensor([[[[1.0, 2.0]], [[3.0, 0.0]]]])      # [1, 2, 1, 2]
    target = torch.zeros_like(pred)
    log_s = torch.tensor([[[[0.0, np.log(2.0)]]]])
    mse = [(1 + 9) / 2, (4 + 0) / 2]
    expected = (mse[0] / 2 + 0.0 + mse[1] / (2 * 4) + np.log(2.0)) / 2
    assert uncertainty_loss(pred, target, log_s).item() == pytest.approx(expected)


def test_penultimate_features_are_the_second_to_last_block_through_ln_post_and_proj(
        small_clip):
    from segearth_ov.models.dense_clip import DenseCLIP
    visual = small_clip[0].visual
    images = torch.randn(1, 3, 32, 48)
    captured = {}
    handle = visual.transformer.resblocks[-2].register_forward_hook(
        lambda module, inputs, output: captured.update(out=output))
    with torch.no_grad():
        DenseCLIP(visual, 'vanilla')(images)
        feats = DenseCLIP(visual, 'vanilla').penultimate_features(images)
    handle.remove()
    tokens = visual.ln_post(captured['out'])[:, 1:] @ visual.proj  # [1, 6, D]
    expected = tokens.transpose(1, 2).reshape(1, -1, 2, 3)
    torch.testing.assert_close(feats, expected, atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------------ training
@pytest.mark.slow
def test_loss_falls_when_overfitting_a_fixed_batch(tmp_path):
    trainer = Trainer(TrainConfig(images=str(make_images(tmp_path / 'img', 2)),
                                  work_dir=str(tmp_path / 'work'), lr=3e-3, **SMALL))
    batch = torch.randn(2, 3, 32, 32)
    losses = []
    for _ in range(15):  # the mean of the last 5 is under half the first 5 by step 15
        trainer.rng.seed(0)  # the same views, projections and dropout every step
        trainer.proj_generator.manual_seed(1)
        torch.manual_seed(2)
        losses.append(trainer.train_step(batch))
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5]), losses


def test_checkpoint_loads_strictly_into_the_segmentor_and_changes_its_output(tmp_path):
    work = tmp_path / 'work'
    assert main(['--images', str(make_images(tmp_path / 'img')), '--clip', 'ViT-S-16',
                 '--pretrained', 'none', '--crop', '32', '--batch-size', '2', '--steps', '3',
                 '--save-every', '2', '--num-workers', '0', '--work-dir', str(work),
                 '--quiet']) == 0
    saved = sorted(p.name for p in work.glob('upsampler_step*.ckpt'))
    assert saved == ['upsampler_step0000002.ckpt', 'upsampler_step0000003.ckpt']
    ckpt = torch.load(work / saved[-1], weights_only=True)
    assert all(key.startswith('upsampler.') for key in ckpt['state_dict'])
    assert len(ckpt['state_dict']) == 12  # the published SimFeatUp layout
    with_up = small_segmentor(upsampler=dict(type='jbu_one', checkpoint=str(work / saved[-1])))
    without = small_segmentor()
    images = torch.randn(1, 3, 48, 64)
    a = with_up.predict(images)[0].seg_logits.data
    b = without.predict(images)[0].seg_logits.data
    assert a.shape == b.shape and not torch.allclose(a, b)
    fresh = small_segmentor(upsampler=dict(type='jbu_one')).upsampler
    load_upsampler_checkpoint(fresh, str(work / saved[-1]))  # strict


def test_resume_continues_with_the_same_state(tmp_path):
    images = make_images(tmp_path / 'img')  # 6 images, batch 2: 3 steps per epoch

    def config(work, steps):
        return TrainConfig(images=str(images), steps=steps, save_every=2, work_dir=str(work),
                           **SMALL)

    full = Trainer(config(tmp_path / 'full', 4))
    full.train(progress=False)
    first = Trainer(config(tmp_path / 'part', 2))
    first.train(progress=False)
    resumed = Trainer(config(tmp_path / 'part', 4))
    resumed.resume(tmp_path / 'part')
    assert resumed.step == 2 and resumed.batches_seen == 2
    saved_opt = first.optimizer.state_dict()['state']
    for key, value in resumed.optimizer.state_dict()['state'].items():
        torch.testing.assert_close(value['exp_avg'], saved_opt[key]['exp_avg'])
    resumed.train(progress=False)
    for (name, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)
    with pytest.raises(ValueError, match='already at --steps'):
        Trainer(config(tmp_path / 'part', 4)).resume(tmp_path / 'part' / 'train_state.pth')


def test_unreadable_and_non_image_files_are_skipped_and_counted(tmp_path, capsys):
    folder = make_images(tmp_path / 'img', 3)
    (folder / 'broken.jpg').write_bytes(b'\xff\xd8 truncated')
    (folder / 'notes.txt').write_text('not an image')
    assert main(['--images', str(folder), '--clip', 'ViT-S-16', '--pretrained', 'none',
                 '--crop', '32', '--batch-size', '2', '--num-workers', '0', '--work-dir',
                 str(tmp_path / 'work'), '--quiet']) == 0
    out = capsys.readouterr().out
    assert 'trained 2 steps on 4 images (1 unreadable skipped, 1 non-image files ignored)' in out


def test_empty_or_missing_folder(tmp_path, capsys):
    (tmp_path / 'empty').mkdir()
    assert main(['--images', str(tmp_path / 'empty'), '--pretrained', 'none']) == 2
    assert 'no images' in capsys.readouterr().err
    assert main(['--images', str(tmp_path / 'nope'), '--pretrained', 'none']) == 2
    assert 'does not exist' in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match='training state'):
        Trainer(TrainConfig(images=str(make_images(tmp_path / 'img', 2)), **SMALL)).resume(
            tmp_path / 'no_state')


def test_two_cpu_processes_with_gloo(tmp_path):
    work = tmp_path / 'work'
    run = subprocess.run(
        [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2',
         '--master_port', str(free_port()), str(REPO / 'tools' / 'train_upsampler.py'),
         '--images', str(make_images(tmp_path / 'img')), '--clip', 'ViT-S-16', '--pretrained',
         'none', '--crop', '32', '--batch-size', '1', '--steps', '2', '--save-every', '2',
         '--num-workers', '0', '--work-dir', str(work), '--launcher', 'pytorch', '--quiet'],
        capture_output=True, text=True, timeout=600,
        env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert run.returncode == 0, run.stderr[-3000:]
    assert [p.name for p in work.glob('*.ckpt')] == ['upsampler_step0000002.ckpt']
    assert 'trained 2 steps' in run.stdout


class _RunsAShellCommand:
    """What a crafted pickle does: its __reduce__ calls os.system on load."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os
        return os.system, (f'touch {self.marker}',)


def test_resume_never_runs_code_from_a_crafted_state(tmp_path):
    marker = tmp_path / 'pwned'
    state = tmp_path / 'train_state.pth'
    torch.save(dict(model={}, step=1, payload=_RunsAShellCommand(marker)), state)
    trainer = Trainer(TrainConfig(images=str(make_images(tmp_path / 'img', 2)), **SMALL))
    with pytest.raises(ValueError, match='cannot read training state .*train_state.pth'):
        trainer.resume(state)
    assert not marker.exists()


def test_training_cli_errors_are_one_paragraph_unless_debug(tmp_path, capsys):
    from segearth_ov.training.cli import main
    args = ['--images', str(tmp_path / 'nowhere'), '--pretrained', 'none', '--clip',
            'ViT-S-16', '--device', 'cpu', '--quiet', '--work-dir', str(tmp_path / 'w')]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert 'nowhere' in err and 'Traceback' not in err and len(err.splitlines()) == 1
    assert main(args + ['--debug']) == 2
    assert 'Traceback' in capsys.readouterr().err
