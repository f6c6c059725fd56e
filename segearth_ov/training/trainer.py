"""SimFeatUp training, as the SegEarth-OV paper describes it: a frozen CLIP, the multi-view
reconstruction loss in a random projection with learned uncertainty, and the
image-reconstruction loss."""
from __future__ import annotations

import contextlib
import math
import os
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from ..fileio import atomic_path
from ..models.dense_clip import DenseCLIP
from ..models.upsamplers import build_upsampler
from ..weights import build_clip
from .data import ShardedShuffle, UnlabeledImages, collate, list_images
from .downsampler import AttentionDownsampler
from .jitter import Jitter, apply_jitter, sample_jitter
from .losses import ImageHead, project, random_projection, uncertainty_loss

STATE_FILE = 'train_state.pth'


@dataclass
class TrainConfig:
    """Every setting of an upsampler training run."""

    images: str
    clip: str = 'ViT-B-16'
    pretrained: Optional[str] = 'openai'
    upsampler: str = 'jbu_one'
    steps: Optional[int] = None          # default: one epoch over the images
    batch_size: int = 4                  # per process
    crop: int = 224
    lr: float = 1e-3
    n_jitters: int = 5
    max_pad: int = 20
    max_zoom: float = 2.0
    proj_dim: int = 30
    image_loss_weight: float = 0.1
    save_every: int = 1000
    work_dir: str = 'work_dirs/simfeatup'
    seed: int = 0
    num_workers: int = 2
    device: Optional[str] = None


class SimFeatUp(nn.Module):
    """The trained parts: the upsampler and its training-only helpers (the attention
    downsampler, the uncertainty head and the image-reconstruction head)."""

    def __init__(self, upsampler: str, dim: int, patch: int):
        super().__init__()
        # the inference factory: same checks, same modules, fresh weights
        self.upsampler = build_upsampler(dict(type=upsampler), dim, patch,
                                         warn_random=False).train()
        self.downsampler = AttentionDownsampler(dim, patch)
        self.log_scale = nn.Conv2d(dim, 1, 1)
        self.image_head = ImageHead(dim)

    def forward(self, lr_feats: Tensor, image: Tensor, jit_image: Tensor, lr_jit_feats: Tensor,
                jitter: Jitter, max_pad: int, proj: Tensor):
        """Losses of one jittered view: ``(reconstruction, image reconstruction)``.

        lr_feats ``[B, D, h, w]`` of ``image`` ``[B, 3, H, W]``; ``jit_image`` and its
        features ``lr_jit_feats`` come from the same view ``jitter``."""
        hr = self.upsampler(lr_feats, image)
        hr_jit = apply_jitter(hr, max_pad, jitter)
        down = self.downsampler(hr_jit)
        rec = uncertainty_loss(project(down, proj), project(lr_jit_feats, proj),
                               self.log_scale(lr_jit_feats))
        img = F.mse_loss(self.image_head(hr_jit), jit_image)
        return rec, img


def _atomic_save(obj, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


class Trainer:
    """Single- or multi-process (DDP; gloo on CPU) SimFeatUp training."""

    def __init__(self, cfg: TrainConfig, rank: int = 0, world: int = 1):
        self.cfg, self.rank, self.world = cfg, rank, world
        device = cfg.device or ('cuda' if torch.cuda.is_available() else 'cpu')
        if device == 'cuda' and world > 1:
            device = f'cuda:{int(os.environ.get("LOCAL_RANK", rank))}'
        self.device = torch.device(device)
        files, self.non_images = list_images(cfg.images)
        torch.manual_seed(cfg.seed)
        clip, _ = build_clip(cfg.clip, cfg.pretrained)
        self.backbone = DenseCLIP(clip.visual, 'vanilla').to(self.device).eval()
        self.backbone.requires_grad_(False)
        dim, self.patch = self.backbone.embed_dim, self.backbone.patch_size
        if cfg.crop % self.patch:
            raise ValueError(f'crop {cfg.crop} is not a multiple of the patch size {self.patch}')
        self.model = SimFeatUp(cfg.upsampler, dim, self.patch).to(self.device).train()
        self.net = self.model
        if world > 1:
            self.net = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == 'cuda'
                else None)
        self.optimizer = torch.optim.NAdam(self.model.parameters(), lr=cfg.lr)
        self.dataset = UnlabeledImages(files, cfg.crop, cfg.seed)
        self.sampler = ShardedShuffle(len(files), rank, world, cfg.seed)
        self.batches_per_epoch = math.ceil(self.sampler.per_rank / cfg.batch_size)
        self.total_steps = cfg.steps or self.batches_per_epoch
        self.step, self.batches_seen, self.skipped = 0, 0, set()
        self.rng = random.Random(cfg.seed * 1000 + rank)
        self.proj_generator = torch.Generator().manual_seed(cfg.seed * 1000 + rank + 1)
        self.work_dir = Path(cfg.work_dir)

    # ------------------------------------------------------------------------- steps
    def features(self, images: Tensor) -> Tensor:
        with torch.no_grad():
            return self.backbone.penultimate_features(images)

    def train_step(self, images: Tensor) -> float:
        """One optimiser step over ``n_jitters`` views of ``images`` ``[B, 3, H, W]``;
        gradients are accumulated view by view (memory of one view at a time)."""
        cfg = self.cfg
        images = images.to(self.device)
        lr_feats = self.features(images)
        self.optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for index in range(cfg.n_jitters):
            jitter = sample_jitter(images.shape[-2], images.shape[-1], cfg.max_pad,
                                   cfg.max_zoom, self.rng)
            with torch.no_grad():
                jit_images = apply_jitter(images, cfg.max_pad, jitter)
            lr_jit = self.features(jit_images)
            proj = random_projection(lr_feats.shape[1], cfg.proj_dim, self.proj_generator,
                                     self.device)
            last = index == cfg.n_jitters - 1
            sync = contextlib.nullcontext() if last or self.world == 1 else self.net.no_sync()
            with sync:
                rec, img = self.net(lr_feats, images, jit_images, lr_jit, jitter, cfg.max_pad,
                                    proj)
                loss = (rec + cfg.image_loss_weight * img) / cfg.n_jitters
                loss.backward()
            total += loss.item()
        self.optimizer.step()
        return total

    def batches(self):
        """Batches from where training stopped, epoch after epoch."""
        while True:
            epoch, start = divmod(self.batches_seen, self.batches_per_epoch)
            self.sampler.set_epoch(epoch, start * self.cfg.batch_size)
            loader = torch.utils.data.DataLoader(
                self.dataset, batch_size=self.cfg.batch_size, sampler=self.sampler,
                num_workers=self.cfg.num_workers, collate_fn=collate,
                # its own generator: creating a loader must not draw from the global RNG,
                # or a resumed run would diverge from an uninterrupted one
                generator=torch.Generator().manual_seed(self.cfg.seed + epoch))
            for images, skipped in loader:
                self.batches_seen += 1
                self.skipped.update(skipped)
                yield images

    def train(self, progress: bool = True) -> Path:
        from tqdm import tqdm
        bar = tqdm(total=self.total_steps, initial=self.step, unit='step',
                   disable=not progress or self.rank != 0, desc='SimFeatUp')
        batches = self.batches()
        last_saved = None
        while self.step < self.total_steps:
            images = next(batches)
            if images is None:  # every image of this batch was unreadable
                continue
            loss = self.train_step(images)
            self.step += 1
            bar.update(1)
            bar.set_postfix(loss=f'{loss:.4f}', skipped=len(self.skipped))
            if self.step % self.cfg.save_every == 0 or self.step == self.total_steps:
                last_saved = self.save()
        bar.close()
        return last_saved

    # ------------------------------------------------------------------- checkpoints
    def upsampler_checkpoint(self) -> dict:
        """Lightning-style: ``state_dict`` with ``upsampler.``-prefixed keys only."""
        state = {f'upsampler.{k}': v.detach().cpu()
                 for k, v in self.model.upsampler.state_dict().items()}
        return dict(state_dict=state, global_step=self.step,
                    hyper_parameters=dict(clip=self.cfg.clip, pretrained=self.cfg.pretrained,
                                          upsampler=self.cfg.upsampler, patch_size=self.patch,
                                          feat_dim=self.model.upsampler.feat_dim))

    def _rng_state(self) -> dict:
        return dict(rng=self.rng.getstate(), proj_generator=self.proj_generator.get_state(),
                    torch_rng=torch.get_rng_state())

    def _gather(self, value) -> list:
        if self.world == 1:
            return [value]
        gathered = [None] * self.world
        dist.all_gather_object(gathered, value)
        return gathered

    def save(self) -> Optional[Path]:
        """Rank 0 writes ``upsampler_step<N>.ckpt`` and the resumable ``train_state.pth``
        (with every rank's random state and the union of skipped files)."""
        self.skipped = set().union(*map(set, self._gather(sorted(self.skipped))))
        rng_states = self._gather(self._rng_state())
        if self.rank != 0:
            return None
        path = self.work_dir / f'upsampler_step{self.step:07d}.ckpt'
        _atomic_save(self.upsampler_checkpoint(), path)
        _atomic_save(dict(model=self.model.state_dict(), optimizer=self.optimizer.state_dict(),
                          step=self.step, batches_seen=self.batches_seen,
                          skipped=sorted(self.skipped), rng_states=rng_states,
                          config=asdict(self.cfg), world=self.world),
                     self.work_dir / STATE_FILE)
        return path

    def resume(self, path) -> None:
        path = Path(path)
        if path.is_dir():
            path = path / STATE_FILE
        if not path.is_file():
            raise FileNotFoundError(f'training state {path} not found (it is written as '
                                    f'{STATE_FILE} in the work dir at every checkpoint)')
        try:
            # weights_only: tensors, numbers, strings and containers only, so a crafted file
            # cannot run code (the state holds nothing else: see save())
            state = torch.load(path, map_location='cpu', weights_only=True)
        except Exception as error:
            raise ValueError(f'cannot read training state {path} (truncated, or not a state '
                             f'this tool wrote): {type(error).__name__}: {error}') from error
        if state.get('world', 1) != self.world:
            raise ValueError(f'{path} was written by {state["world"]} processes; resume it with '
                             f'the same number (now {self.world})')
        self.model.load_state_dict(state['model'])
        self.optimizer.load_state_dict(state['optimizer'])
        self.step, self.batches_seen = state['step'], state['batches_seen']
        self.skipped = set(state['skipped'])
        mine = state['rng_states'][self.rank]
        self.rng.setstate(mine['rng'])
        self.proj_generator.set_state(mine['proj_generator'])
        torch.set_rng_state(mine['torch_rng'])
        if self.step >= self.total_steps:
            raise ValueError(f'{path} is at step {self.step}, already at --steps '
                             f'{self.total_steps}: raise --steps to train further')
