"""Names files, templates and query embeddings."""
import open_clip
import pytest
import torch
import torch.nn.functional as F

from segearth_ov.models.text import (ClassQueries, encode_queries, openai_imagenet_templates,
                                     parse_prompt_templates, read_class_names)


def test_names_file_with_synonyms(tmp_path):
    path = tmp_path / 'names.txt'
    path.write_text('background\nbuilding,roof, house\nroad\n')
    names = read_class_names(str(path))
    assert names.class_names == ('background', 'building', 'road')
    assert names.queries == ('background', 'building', 'roof', 'house', 'road')
    assert names.query_to_class == (0, 1, 1, 1, 2)


@pytest.mark.parametrize('content,message', [
    ('', 'the class list is empty'),
    ('\n', 'the class list is empty'),
    ('road\n\nwater\n', 'line 2 is blank'),
    ('road,,street\n', r"class 1 \('road,,street'\) has an empty name"),
    ('road\nwater\nroad\n', r"'road' is given twice \(classes 1 and 3\)"),
    ('road,street\nStreet\n', r"'Street' is given twice \(classes 1 and 2\)"),
])
def test_bad_names_files(tmp_path, content, message):
    path = tmp_path / 'names.txt'
    path.write_text(content)
    with pytest.raises(ValueError, match=message) as info:
        read_class_names(str(path))
    assert str(path) in str(info.value)


def test_missing_names_file(tmp_path):
    with pytest.raises(FileNotFoundError, match='class-name file not found: .*nope.txt'):
        read_class_names(str(tmp_path / 'nope.txt'))


def test_the_80_openai_templates():
    templates = openai_imagenet_templates()
    assert len(templates) == 80
    assert [t('x') for t in templates] == [
        t('x') for t in open_clip.zero_shot_metadata.OPENAI_IMAGENET_TEMPLATES]


def test_query_embeddings_match_per_prompt_average(small_clip):
    model, tokenizer = small_clip
    queries = ['road', 'water body']
    templates = ['a photo of {}.', 'a satellite image of {}.', '{}']
    out = encode_queries(model, tokenizer, queries, templates, batch_size=2)
    for row, query in zip(out, queries):
        with torch.no_grad():
            per = [F.normalize(model.encode_text(tokenizer([t.format(query)])), dim=-1)[0]
                   for t in templates]
        expected = F.normalize(torch.stack(per).mean(0), dim=0)
        torch.testing.assert_close(row, expected, rtol=1e-5, atol=1e-6)
    assert ClassQueries.parse(['a', 'b,c']).num_classes == 2


# --- the on-disk text-embedding cache -------------------------------------------------------------

@pytest.fixture
def counted(monkeypatch):
    """Counts the queries actually encoded."""
    import segearth_ov.models.text as text
    seen = []
    real = text.encode_queries

    def spy(model, tokenizer, queries, templates, **kwargs):
        seen.extend(queries)
        return real(model, tokenizer, queries, templates, **kwargs)
    monkeypatch.setattr(text, 'encode_queries', spy)
    return seen


def test_second_run_reads_the_cache_and_new_names_only_are_encoded(small_clip, counted,
                                                                   tmp_path):
    from segearth_ov.models.text import cached_query_embeddings
    model, tokenizer = small_clip
    templates = ['a photo of {}.', lambda c: f'an aerial view of {c}.']
    first = cached_query_embeddings(model, tokenizer, ['road', 'water'], templates, 'w1',
                                    tmp_path)
    assert counted == ['road', 'water']
    again = cached_query_embeddings(model, tokenizer, ['water', 'road'], templates, 'w1',
                                    tmp_path)
    assert counted == ['road', 'water']  # nothing encoded the second time
    torch.testing.assert_close(again, first[[1, 0]], rtol=0, atol=0)
    more = cached_query_embeddings(model, tokenizer, ['road', 'tree'], templates, 'w1',
                                   tmp_path)
    assert counted == ['road', 'water', 'tree']
    torch.testing.assert_close(more, encode_queries(model, tokenizer, ['road', 'tree'],
                                                    templates), rtol=1e-6, atol=1e-6)
    # other weights or other templates are other entries
    cached_query_embeddings(model, tokenizer, ['road'], templates, 'w2', tmp_path)
    cached_query_embeddings(model, tokenizer, ['road'], templates[:1], 'w1', tmp_path)
    assert counted == ['road', 'water', 'tree', 'road', 'road']


def test_no_weights_key_or_disabled_means_no_cache(small_clip, counted, tmp_path,
                                                   monkeypatch):
    from segearth_ov.models.text import cached_query_embeddings
    model, tokenizer = small_clip
    for _ in range(2):
        cached_query_embeddings(model, tokenizer, ['road'], ['{}'], None, tmp_path)
    monkeypatch.setenv('SEGEARTH_OV_TEXT_CACHE', '0')
    for _ in range(2):
        cached_query_embeddings(model, tokenizer, ['road'], ['{}'], 'w', None)
    assert counted == ['road'] * 4 and not list(tmp_path.iterdir())


def test_a_corrupt_cache_file_is_recomputed(small_clip, counted, tmp_path):
    from segearth_ov.models.text import cached_query_embeddings
    model, tokenizer = small_clip
    cached_query_embeddings(model, tokenizer, ['road'], ['{}'], 'w', tmp_path)
    (cache,) = tmp_path.iterdir()
    cache.write_bytes(b'garbage')
    out = cached_query_embeddings(model, tokenizer, ['road'], ['{}'], 'w', tmp_path)
    assert counted == ['road', 'road'] and out.shape == (1, model.text_projection.shape[1])


def test_segmentor_with_a_weights_file_reuses_the_cache(tmp_path, counted, monkeypatch):
    """Two models built from the same CLIP file: the second encodes nothing."""
    from conftest import small_segmentor
    monkeypatch.setenv('SEGEARTH_OV_TEXT_CACHE', str(tmp_path / 'cache'))
    torch.manual_seed(0)
    weights = tmp_path / 'clip.pt'
    torch.save(open_clip.create_model('ViT-S-16').state_dict(), weights)
    first = small_segmentor(clip=dict(arch='ViT-S-16', pretrained=str(weights)))
    embeddings = first.query_embeddings
    encoded = len(counted)
    second = small_segmentor(clip=dict(arch='ViT-S-16', pretrained=str(weights)))
    torch.testing.assert_close(second.query_embeddings, embeddings, rtol=0, atol=0)
    assert encoded == 5 and len(counted) == encoded  # road, building, roof, tree, water
    small_segmentor(clip=dict(arch='ViT-S-16', pretrained=str(weights)),
                    text_cache=False).query_embeddings
    assert len(counted) == 2 * encoded


@pytest.mark.parametrize('fixture', ['small_clip', 'vit_b16'])
def test_text_encoding_skips_the_padding_exactly(fixture, request):
    """Only the columns up to the last end-of-text token are computed: equal to open_clip's
    encode_text on the full 77-token context (float rounding only)."""
    from segearth_ov.models.text import encode_text
    model, tokenizer = request.getfixturevalue(fixture)
    tokens = tokenizer(['a photo of a building.', 'low vegetation', 'road',
                        'a satellite image of a very large parking lot with many cars'])
    with torch.no_grad():
        expected = model.encode_text(tokens)
        got = encode_text(model, tokens)
    torch.testing.assert_close(got, expected, atol=2e-5, rtol=1e-5)


def test_text_encoding_keeps_towers_that_read_the_padding(small_clip, monkeypatch):
    """A tower pooling the last column (non-causal towers do) runs on the whole context."""
    from segearth_ov.models.text import encode_text
    model, tokenizer = small_clip
    tokens = tokenizer(['road', 'a photo of a building.'])
    monkeypatch.setattr(model, 'text_pool_type', 'last')
    with torch.no_grad():
        assert torch.equal(encode_text(model, tokens), model.encode_text(tokens))


def test_prompt_templates_from_semicolons_or_a_file(tmp_path):
    assert parse_prompt_templates('a photo of {}.; an aerial view of {} ;') == [
        'a photo of {}.', 'an aerial view of {}']
    listed = tmp_path / 'templates.txt'
    listed.write_text('\ufeffa photo of {}.\n\nsatellite image of {}\n', encoding='utf-8')
    assert parse_prompt_templates(str(listed)) == ['a photo of {}.', 'satellite image of {}']
    for bad in ('a photo', '{} and {}', 'a {x} of {}', 'a photo of {}}'):
        with pytest.raises(ValueError, match=f"prompt template '{bad}' must hold {{}} once"):
            parse_prompt_templates(bad)
    with pytest.raises(ValueError, match='no prompt templates'):
        parse_prompt_templates(' ; ')
    listed.write_bytes(b'\xff\xfe a photo of {}')
    with pytest.raises(ValueError, match='prompt-template file .*templates.txt is not UTF-8'):
        parse_prompt_templates(str(listed))
