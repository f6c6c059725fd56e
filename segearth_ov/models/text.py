"""Text side: class-name files, prompt templates and the query embeddings.

A names file has one class per line; a line may list comma-separated synonyms
(``building,roof,house``), each its own *query* that maps back to the line's class.
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from ..fileio import atomic_path

Template = Union[str, Callable[[str], str]]
logger = logging.getLogger(__name__)
TEXT_CACHE_ENV = 'SEGEARTH_OV_TEXT_CACHE'  # a folder, or 0 to turn the cache off


@dataclass(frozen=True)
class ClassQueries:
    """A parsed class list: ``queries[i]`` belongs to class ``query_to_class[i]``; ``lines``
    are the classes as ``"name,synonym"`` lines."""
    class_names: Tuple[str, ...]
    queries: Tuple[str, ...]
    query_to_class: Tuple[int, ...]
    lines: Tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @classmethod
    def parse(cls, classes: Union['ClassQueries', str, Sequence[str]],
              source: str = '<classes>') -> 'ClassQueries':
        """The one class-list parser, for names files, the API and the command line.

        ``classes``: lines (one class each, commas separate synonyms), a string with
        semicolons between classes (``"building,roof;road"``), or a parsed list (returned
        as it is). Names are stripped of surrounding spaces. Errors, naming ``source``: an
        empty list; a blank line or empty name (it would shift every later class index);
        a name, class or synonym, given twice (case-insensitive: it would be ambiguous).
        """
        if isinstance(classes, ClassQueries):
            return classes
        lines = classes.split(';') if isinstance(classes, str) else [str(c) for c in classes]
        if all(not line.strip(' ,') for line in lines):
            raise ValueError(f'{source}: the class list is empty; give one class per line '
                             f'(or "building,roof;road;water")')
        class_names, queries, owners, kept, seen = [], [], [], [], {}
        for index, line in enumerate(lines):
            synonyms = [name.strip() for name in line.split(',')]
            if not line.strip():
                raise ValueError(f'{source}: line {index + 1} is blank; every line must name a '
                                 f'class (a blank line would shift every later class index)')
            if not all(synonyms):
                raise ValueError(f'{source}: class {index + 1} ({line.strip()!r}) has an empty '
                                 f'name')
            for name in synonyms:
                if name.lower() in seen:
                    raise ValueError(f'{source}: {name!r} is given twice (classes '
                                     f'{seen[name.lower()] + 1} and {index + 1})')
                seen[name.lower()] = index
                queries.append(name)
                owners.append(index)
            class_names.append(synonyms[0])
            kept.append(','.join(synonyms))
        return cls(tuple(class_names), tuple(queries), tuple(owners), tuple(kept))


def read_name_lines(path, what: str = 'class-name file') -> List[str]:
    """The lines of a names file: UTF-8 (a byte-order mark is dropped), trailing newlines
    ignored. Errors name the file as ``what``."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f'{what} not found: {path}')
    try:
        with open(path, encoding='utf-8-sig') as f:
            text = f.read()
    except UnicodeDecodeError as error:
        raise ValueError(f'{what} {path} is not UTF-8 text ({error}); save it as '
                         f'UTF-8') from error
    lines = text.rstrip('\r\n').split('\n')
    return [] if lines == [''] else [line.rstrip('\r') for line in lines]


def read_class_names(path) -> ClassQueries:
    """Read and parse a names file (one class per line, commas separate synonyms)."""
    return ClassQueries.parse(read_name_lines(path), source=str(path))


def segmentor_classes(name_path: Optional[str], classes, bg_idx: int) -> ClassQueries:
    """A segmentor's class list: exactly one of ``name_path`` (a names file) or ``classes``
    (anything :meth:`ClassQueries.parse` takes), with ``bg_idx`` one of its classes."""
    if (name_path is None) == (classes is None):
        raise ValueError('give exactly one of name_path (a class-name file) or classes')
    queries = read_class_names(name_path) if name_path is not None else \
        ClassQueries.parse(classes)
    if not 0 <= bg_idx < queries.num_classes:
        raise ValueError(f'bg_idx={bg_idx} is not a class index (0..{queries.num_classes - 1})')
    return queries


def openai_imagenet_templates() -> List[Template]:
    """The 80 ImageNet prompt templates of CLIP, as open_clip ships them."""
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES
    return list(OPENAI_IMAGENET_TEMPLATES)


def parse_prompt_templates(text: str) -> List[str]:
    """Prompt templates as a user writes them: a UTF-8 file with one template per line, or
    templates separated by semicolons (``"a satellite photo of {}.;an aerial view of {}"``).
    Each holds ``{}`` once, where the class name goes, and no other brace; ``ValueError``
    naming the template otherwise. Blank entries are ignored."""
    if os.path.isfile(text):
        entries = read_name_lines(text, 'prompt-template file')
    else:
        entries = text.split(';')
    templates = [entry.strip() for entry in entries if entry.strip()]
    if not templates:
        raise ValueError(f'no prompt templates in {text!r}')
    for template in templates:
        rest = template.replace('{}', '')
        if template.count('{}') != 1 or '{' in rest or '}' in rest:
            raise ValueError(f'prompt template {template!r} must hold {{}} once, where the class '
                             f'name goes, and no other brace (or name a file of templates, '
                             f'one per line)')
    return templates


def _fill(template: Template, name: str) -> str:
    return template(name) if callable(template) else template.format(name)


@torch.no_grad()
def encode_text(clip_model, tokens: Tensor) -> Tensor:
    """``clip_model.encode_text(tokens)`` ``[B, D]`` for tokens ``[B, L]``, computed only on
    the columns up to the batch's last pooled (end-of-text) token when the text tower is
    causal and pools at that token (open_clip's ``CLIP`` with ``argmax`` or ``eos``
    pooling): under a causal mask no output at or before that token depends on the padding
    after it, so the padding is never computed (a 77-token context holds prompts of about
    10 tokens). Any other tower runs ``encode_text`` as it is."""
    import open_clip
    from open_clip.transformer import text_global_pool
    pool = getattr(clip_model, 'text_pool_type', None)
    if not isinstance(clip_model, open_clip.CLIP) or clip_model.attn_mask is None or \
            pool not in ('argmax', 'eos'):
        return clip_model.encode_text(tokens)
    eos = getattr(clip_model, 'text_eos_id', None)
    pooled = tokens.argmax(dim=-1) if pool == 'argmax' else \
        (tokens == eos).int().argmax(dim=-1)
    length = int(pooled.max()) + 1
    text = tokens[:, :length]
    cast_dtype = clip_model.transformer.get_cast_dtype()
    x = clip_model.token_embedding(text).to(cast_dtype) + \
        clip_model.positional_embedding[:length].to(cast_dtype)
    x = clip_model.transformer(x, attn_mask=clip_model.attn_mask[:length, :length])
    x = text_global_pool(clip_model.ln_final(x), text, pool, eos_token_id=eos)
    if clip_model.text_projection is None:
        return x
    if isinstance(clip_model.text_projection, torch.nn.Linear):
        return clip_model.text_projection(x)
    return x @ clip_model.text_projection


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
        chunks.append(F.normalize(encode_text(clip_model, tokens).float(), dim=-1))
    per_prompt = torch.cat(chunks).view(len(queries), len(templates), -1)
    return F.normalize(per_prompt.mean(dim=1), dim=-1)


@functools.lru_cache(maxsize=1)
def bpe_tokenizer():
    """open_clip's CLIP BPE tokenizer (read once: it loads the 49k merges)."""
    from open_clip.tokenizer import SimpleTokenizer
    return SimpleTokenizer()


@functools.lru_cache(maxsize=1)
def longest_token_chars() -> int:
    """The most characters one token of that vocabulary covers: a text of more than this
    times the context cannot fit, and is refused before the (quadratic) tokenisation."""
    return max(len(token.removesuffix('</w>')) for token in bpe_tokenizer().encoder)


def check_query_lengths(queries: Sequence[str], context_length: int,
                        templates: Sequence[Template] = ('{}',), method: str = 'CLIP') -> None:
    """Refuse (``ValueError`` naming the class) a query that does not fit the text encoder's
    ``context_length`` tokens in its longest template (start and end tokens included),
    instead of silently cutting it. Counted with the CLIP BPE vocabulary open_clip ships."""
    longest = max(templates, key=lambda t: len(_fill(t, '')))
    for query in queries:
        text = _fill(longest, query)
        too_long = len(text) > context_length * longest_token_chars() or \
            len(bpe_tokenizer().encode(text)) + 2 > context_length
        if too_long:
            shown = query if len(query) <= 60 else f'{query[:40]}... ({len(query)} characters)'
            raise ValueError(f'class name {shown!r} is too long for {method}\'s text encoder '
                             f'({context_length} tokens with its prompt); shorten it')


def text_cache_dir() -> Optional[Path]:
    """Where query embeddings are cached: ``$SEGEARTH_OV_TEXT_CACHE``, else
    ``$XDG_CACHE_HOME/segearth_ov/text`` (``~/.cache/...``); None when the variable is 0."""
    value = os.environ.get(TEXT_CACHE_ENV, '')
    if value.lower() in ('0', 'off', 'false', 'no'):
        return None
    if value:
        return Path(value)
    return Path(os.environ.get('XDG_CACHE_HOME') or Path.home() / '.cache') / 'segearth_ov' / 'text'


def embedding_width(clip_model) -> int:
    """The width ``D`` of the text embeddings :func:`encode_text` returns."""
    projection = clip_model.text_projection
    if projection is None:
        return clip_model.ln_final.normalized_shape[0]
    if isinstance(projection, torch.nn.Linear):
        return projection.out_features
    return projection.shape[1]


def _cache_problem(stored: dict, width: int) -> Optional[str]:
    """Why cached embeddings cannot be used (None when they can): each must be a finite
    float32 unit vector ``[width]`` under a string key."""
    for query, value in stored.items():
        if not isinstance(query, str) or not isinstance(value, Tensor):
            return f'entry {query!r} is not a name and a tensor'
        if value.dtype != torch.float32 or tuple(value.shape) != (width,):
            return f'{query!r} is {value.dtype} {tuple(value.shape)}, not float32 ({width},)'
        if not torch.isfinite(value).all() or abs(float(value.norm()) - 1) > 1e-3:
            return f'{query!r} is not a finite unit vector'
    return None


def _cache_file(folder: Path, weights_key: str, templates: Sequence[Template]) -> Path:
    texts = [_fill(t, '{}') for t in templates]  # callables written out as format strings
    digest = hashlib.sha256(json.dumps([weights_key, texts]).encode()).hexdigest()[:24]
    return folder / f'{digest}.pt'


def cached_query_embeddings(clip_model, tokenizer, queries: Sequence[str],
                            templates: Sequence[Template], weights_key: Optional[str],
                            folder: Optional[Path] = None, progress: bool = False) -> Tensor:
    """:func:`encode_queries`, with every query's embedding kept on disk.

    One file per (weights, templates) maps each query to its embedding, so a rerun with the
    same names costs nothing and a longer vocabulary encodes only its new names. Keyed by
    ``weights_key`` (the weights' identity, content hash for files; None: no cache, as for
    random weights). Written atomically; an unreadable file is recomputed; a cache that
    cannot be written only costs the next run the encoding.
    """
    folder = text_cache_dir() if folder is None else folder
    if weights_key is None or folder is None:
        return encode_queries(clip_model, tokenizer, queries, templates, progress=progress)
    path = _cache_file(Path(folder), weights_key, templates)
    stored: Dict[str, Tensor] = {}
    if path.is_file():
        try:
            stored = dict(torch.load(path, map_location='cpu', weights_only=True))
        except Exception as error:  # truncated or foreign: recompute, never fail on a cache
            logger.warning('text-embedding cache %s is unreadable (%s); recomputing', path,
                           error)
        problem = _cache_problem(stored, embedding_width(clip_model))
        if problem:
            logger.warning('text-embedding cache %s does not fit this model (%s); '
                           'recomputing', path, problem)
            stored = {}
    missing = [q for q in dict.fromkeys(queries) if q not in stored]
    if missing:
        new = encode_queries(clip_model, tokenizer, missing, templates, progress=progress)
        stored.update({q: e.cpu() for q, e in zip(missing, new)})
        try:
            with atomic_path(path) as tmp:
                torch.save(stored, tmp)
        except OSError as error:
            logger.warning('cannot write the text-embedding cache %s (%s)', path, error)
    device = next(clip_model.parameters()).device
    return torch.stack([stored[q] for q in queries]).to(device)
