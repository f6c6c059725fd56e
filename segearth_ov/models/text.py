"""Text side: class-name files, prompt templates and the query embeddings.

A names file has one class per line; a line may list comma-separated synonyms
(``building,roof,house``), each its own *query* that maps back to the line's class.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, List, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor

Template = Union[str, Callable[[str], str]]


@dataclass(frozen=True)
class ClassQueries:
    """Queries of a names file: ``queries[i]`` belongs to class ``query_to_class[i]``."""
    class_names: Tuple[str, ...]
    queries: Tuple[str, ...]
    query_to_class: Tuple[int, ...]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @classmethod
    def from_lines(cls, lines: Sequence[str], source: str = '<classes>') -> 'ClassQueries':
        """Parse class lines; ``source`` names the origin in error messages."""
        if not lines:
            raise ValueError(f'{source}: no class names (the list is empty)')
        class_names, queries, owners = [], [], []
        for index, line in enumerate(lines):
            synonyms = [s.strip() for s in line.split(',')]
            if not line.strip() or not all(synonyms):
                raise ValueError(f'{source}: line {index + 1} is blank or has an empty '
                                 f'synonym ({line!r}); every line must name a class')
            class_names.append(synonyms[0])
            for synonym in synonyms:
                queries.append(synonym)
                owners.append(index)
        seen = set()
        for name in class_names:
            if name in seen:
                raise ValueError(f'{source}: class {name!r} is listed twice')
            seen.add(name)
        return cls(tuple(class_names), tuple(queries), tuple(owners))


def read_name_lines(path) -> List[str]:
    """The lines of a names file: UTF-8 (a byte-order mark is dropped), trailing newlines
    ignored. Errors name the file."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f'class-name file not found: {path}')
    try:
        with open(path, encoding='utf-8-sig') as f:
            text = f.read()
    except UnicodeDecodeError as error:
        raise ValueError(f'class-name file {path} is not UTF-8 text ({error}); save it as '
                         f'UTF-8') from error
    lines = text.rstrip('\r\n').split('\n')
    return [] if lines == [''] else [line.rstrip('\r') for line in lines]


def read_class_names(path: str) -> ClassQueries:
    """Read a names file (one class per line, commas separate synonyms).

    A blank line inside the file is an error, because it would silently shift every later
    class index.
    """
    return ClassQueries.from_lines(read_name_lines(path), source=path)


def openai_imagenet_templates() -> List[Template]:
    """The 80 ImageNet prompt templates of CLIP, as open_clip ships them."""
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES
    return list(OPENAI_IMAGENET_TEMPLATES)


def _fill(template: Template, name: str) -> str:
    return template(name) if callable(template) else template.format(name)


@torch.no_grad()
def encode_queries(clip_model, tokenizer, queries: Sequence[str],
                   templates: Sequence[Template], batch_size: int = 256,
                   progress: bool = False) -> Tensor:
    """Query embeddings ``[Q, D]``: each query in every template, each text embedding
    L2-normalised, averaged over templates, and the mean L2-normalised again. With
    ``progress``, a bar counts the prompt batches when there is more than one."""
    from tqdm import tqdm
    if not templates:
        raise ValueError('at least one prompt template is needed')
    prompts = [_fill(t, q) for q in queries for t in templates]
    device = next(clip_model.parameters()).device
    chunks = []
    starts = range(0, len(prompts), batch_size)
    for start in tqdm(starts, desc=f'text: {len(queries)} names x {len(templates)} templates',
                      unit='batch', disable=not progress or len(starts) < 2, leave=False):
        tokens = tokenizer(prompts[start:start + batch_size]).to(device)
        chunks.append(F.normalize(clip_model.encode_text(tokens).float(), dim=-1))
    per_prompt = torch.cat(chunks).view(len(queries), len(templates), -1)
    return F.normalize(per_prompt.mean(dim=1), dim=-1)
