"""Names files, templates and query embeddings."""
import open_clip
import pytest
import torch
import torch.nn.functional as F

from segearth_ov.models.text import (ClassQueries, encode_queries, openai_imagenet_templates,
                                     read_class_names)


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
